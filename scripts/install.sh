#!/usr/bin/env bash
# Installs rimd into a prefix: the binaries (rimd, rimctl), the C header and library
# (rim_ring.h, librim_ring.so and .a) with a pkg-config file, the systemd unit, the example
# configuration (kept if one is there) and the Grafana dashboard.
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--sysconfdir DIR] [--profile release|debug] [--no-build]
#
# --prefix     where it will live (default /usr/local); written into the unit and rim_ring.pc
# --destdir    staging root prepended to every path (for packages); default none
# --sysconfdir configuration directory (default /etc for /usr, else PREFIX/etc)
# --profile    which cargo build to install (default release)
# --no-build   install what target/<profile> holds, without running cargo
#
# Layout under the prefix:
#   bin/rimd bin/rimctl  include/rim_ring.h  lib/librim_ring.{so,a}  lib/pkgconfig/rim_ring.pc
#   lib/systemd/system/rimd.service  share/rimd/grafana/rimd-dashboard.json
#   share/doc/rimd/README.md  SYSCONFDIR/rimd/rimd.toml  SYSCONFDIR/rimd/rules.toml
# The unit expects a `rimd` user: useradd --system --no-create-home rimd
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=""
sysconfdir=""
profile=release
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --destdir) destdir="$2"; shift 2 ;;
    --sysconfdir) sysconfdir="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
if [[ -z "$sysconfdir" ]]; then
  if [[ "$prefix" == /usr ]]; then sysconfdir=/etc; else sysconfdir="$prefix/etc"; fi
fi
case "$profile" in
  release) cargo_profile=release; target_sub=release ;;
  debug|dev) cargo_profile=dev; target_sub=debug ;;
  *) echo "install.sh: --profile release or debug" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
if [[ $build -eq 1 ]]; then
  cargo build --profile "$cargo_profile" -p rimd -p rimctl
  cargo build --profile "$cargo_profile" -p rim-ring --lib
fi
from="$target_dir/$target_sub"
for f in rimd rimctl librim_ring.so librim_ring.a; do
  [[ -f "$from/$f" ]] || { echo "install.sh: $from/$f is missing (build first, or drop --no-build)" >&2; exit 1; }
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
root="$destdir$prefix"
etc="$destdir$sysconfdir/rimd"
docdir="$prefix/share/doc/rimd"

fill() { # template -> output, with the paths of this install
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@BINDIR@|$prefix/bin|g" -e "s|@SYSCONFDIR@|$sysconfdir|g" \
      -e "s|@DOCDIR@|$docdir|g" -e "s|@VERSION@|$version|g" "$1" >"$2"
}

install -d "$root/bin" "$root/include" "$root/lib/pkgconfig" "$root/lib/systemd/system" \
  "$root/share/rimd/grafana" "$destdir$docdir" "$etc"
install -m 0755 "$from/rimd" "$from/rimctl" "$root/bin/"
install -m 0644 ring/include/rim_ring.h "$root/include/"
install -m 0755 "$from/librim_ring.so" "$root/lib/"
install -m 0644 "$from/librim_ring.a" "$root/lib/"
fill packaging/pkgconfig/rim_ring.pc.in "$root/lib/pkgconfig/rim_ring.pc"
fill packaging/systemd/rimd.service.in "$root/lib/systemd/system/rimd.service"
install -m 0644 packaging/grafana/rimd-dashboard.json "$root/share/rimd/grafana/"
install -m 0644 README.md "$destdir$docdir/"
# An operator's configuration is never overwritten.
[[ -e "$etc/rimd.toml" ]] || install -m 0644 config/rimd.example.toml "$etc/rimd.toml"
[[ -e "$etc/rules.toml" ]] || install -m 0644 config/default-rules.toml "$etc/rules.toml"
chmod 0644 "$root/lib/pkgconfig/rim_ring.pc" "$root/lib/systemd/system/rimd.service"

echo "installed rimd $version into ${destdir}${prefix} (configuration in ${destdir}${sysconfdir}/rimd)"
