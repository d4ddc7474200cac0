#!/usr/bin/env bash
# Installs (as root, with apt-get) or names (otherwise) the system packages that the Python
# dependencies in .venv need at run time, then checks that open3d imports and ns-export starts.
#   open3d's core library links libusb-1.0 (absent on a fresh Debian machine): without it every
#   `ns-export` sub-command dies at import.  ns-render writes videos through ffmpeg.
# Usage: scripts/system_deps.sh VENV_DIR
set -euo pipefail
venv=${1:-.venv}
py="$venv/bin/python"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# Shared objects loaded by the commands we ship; optional plugins (open3d's torch/tf ops, CUDA stubs)
# are left out: they are only loaded on request and their missing libraries are not ours to install.
libs=$(ls "$site"/open3d/cpu/pybind*.so "$site"/open3d/libOpen3D.so* "$site"/torch/lib/libtorch_cpu.so \
  "$site"/torch/lib/libtorch_python.so 2>/dev/null || true)
missing=$(for lib in $libs; do ldd "$lib" 2>/dev/null | awk '/not found/ {print $1}'; done | sort -u)

# Debian package for each library a fresh machine may lack.
package_for() {
  case "$1" in
    libusb-1.0.so.0) echo libusb-1.0-0 ;;
    libgomp.so.1) echo libgomp1 ;;
    libGL.so.1) echo libgl1 ;;
    libEGL.so.1) echo libegl1 ;;
    libX11.so.6) echo libx11-6 ;;
    libstdc++.so.6) echo libstdc++6 ;;
    *) echo "UNKNOWN:$1" ;;
  esac
}
packages=""
for lib in $missing; do packages="$packages $(package_for "$lib")"; done
command -v ffmpeg >/dev/null 2>&1 || packages="$packages ffmpeg"
packages=$(echo $packages)

if [ -n "$packages" ]; then
  case "$packages" in *UNKNOWN:*)
    echo "system_deps: no known Debian package provides: $(echo "$packages" | tr ' ' '\n' | sed -n 's/^UNKNOWN://p' | tr '\n' ' ')" >&2
    exit 1 ;;
  esac
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "system_deps: installing $packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
  else
    echo "system_deps: missing system packages: $packages" >&2
    echo "  install them (Debian/Ubuntu): sudo apt-get install $packages" >&2
    exit 1
  fi
fi

# The check the issue asks for: the exporter's imports work after `make install` alone.
"$py" -c "import open3d" || { echo "system_deps: 'import open3d' still fails" >&2; exit 1; }
"$venv/bin/ns-export" --help >/dev/null 2>&1 || {
  "$venv/bin/ns-export" --help >/dev/null
  echo "system_deps: 'ns-export --help' fails" >&2
  exit 1
}
echo "system_deps: open3d imports, ns-export starts, ffmpeg present"
