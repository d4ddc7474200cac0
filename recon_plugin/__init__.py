"""recon_plugin: neural surface and material reconstruction methods for nerfstudio.

Importing the package makes nerfstudio checkpoints loadable under torch >= 2.6, whose
``torch.load`` defaults to ``weights_only=True``: nerfstudio's schedulers leave NumPy scalars in
optimizer state, which the restricted unpickler refuses. nerfstudio discovers our methods through
entry points, so this import runs in every ``ns-*`` process before a checkpoint is read.
"""

from __future__ import annotations

__version__ = "0.1.0"


def register_checkpoint_safe_globals() -> None:
    """Allow-lists the NumPy objects that nerfstudio checkpoints contain (scalars and dtypes).

    Safe to call many times; a no-op on torch versions without ``add_safe_globals``.
    """
    try:
        import numpy as np
        import torch.serialization as serialization
    except ImportError:  # torch missing: nothing can be loaded anyway
        return
    add_safe_globals = getattr(serialization, "add_safe_globals", None)
    if add_safe_globals is None:
        return
    allowed: list = [np.dtype, np.ndarray]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar", "_reconstruct"])
        except ImportError:
            continue
        allowed.extend([module.scalar, module._reconstruct])
    # numpy >= 1.25 pickles dtypes through their concrete classes (numpy.dtypes.Float64DType, ...).
    dtypes_module = getattr(np, "dtypes", None)
    if dtypes_module is not None:
        allowed.extend(
            getattr(dtypes_module, name) for name in dir(dtypes_module) if name.endswith("DType") and name[0].isupper()
        )
    add_safe_globals(allowed)


register_checkpoint_safe_globals()
