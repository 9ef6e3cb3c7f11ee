#!/usr/bin/env bash
# Builds the root filesystem of clawdspace:latest, the default image of
# Clawdspace, as a single tarball ready for
#   clawdspace-runtime import clawdspace:latest OUTPUT.tar
#
# No Docker and no container registry: mmdebstrap installs Debian packages
# from the same Debian mirror the host's apt uses into a temporary directory,
# the hooks below add the `sandbox` user and the rest, and the directory is
# packed as one tarball (numeric ownership, no device nodes). See README.md.
#
# Usage: images/base/build.sh [--variant full|minimal] OUTPUT.tar[.gz]
#
# Environment (all optional):
#   SUITE            Debian suite to build (default: the host's codename,
#                    e.g. bookworm).
#   MIRROR           Debian mirror URL (default: the one the host's apt uses,
#                    else http://deb.debian.org/debian). Setting it also
#                    requires SECURITY_MIRROR for security updates.
#   SECURITY_MIRROR  Debian security mirror URL (default: the host's, else
#                    none when MIRROR is set, else
#                    http://deb.debian.org/debian-security).
#   SOURCE_DATE_EPOCH  passed to mmdebstrap (clamps mtimes, reproducible).
# The mmdebstrap hooks and apt's --format are meant literally (single quotes):
# shellcheck disable=SC2016
set -euo pipefail

usage() {
    echo "usage: $0 [--variant full|minimal] OUTPUT.tar[.gz]" >&2
    exit 2
}

variant=full
output=
while [ $# -gt 0 ]; do
    case "$1" in
    --variant) [ $# -ge 2 ] || usage; variant=$2; shift 2 ;;
    --variant=*) variant=${1#--variant=}; shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [ -z "$output" ] || usage; output=$1; shift ;;
    esac
done
[ -n "$output" ] || usage
case "$variant" in full | minimal) ;; *) echo "unknown variant: $variant" >&2; usage ;; esac
compress=
case "$output" in
*.tar) ;;
*.tar.gz | *.tgz) compress=gzip ;;
*) echo "OUTPUT must end in .tar, .tar.gz or .tgz: $output" >&2; exit 2 ;;
esac

log() { echo "build.sh: $*" >&2; }

start=$(date +%s)

# --- Packages --------------------------------------------------------------

# Both variants start from Debian's "minbase" set (Priority: required, what
# the official debian:*-slim images contain: bash, coreutils, apt, dpkg,
# passwd, ...). Recommends are not installed.
minimal_pkgs=(
    bash coreutils python3 curl ca-certificates git procps
)
full_pkgs=(
    "${minimal_pkgs[@]}"
    python3-pip python3-venv python3-dev
    nodejs npm
    wget build-essential pkg-config
    less nano vim-tiny
    openssh-client unzip zip xz-utils bzip2 jq file patch
    tzdata netbase iputils-ping
)
if [ "$variant" = full ]; then pkgs=("${full_pkgs[@]}"); else pkgs=("${minimal_pkgs[@]}"); fi

# --- Tools -----------------------------------------------------------------

if [ "$(id -u)" = 0 ]; then mode=root; else mode=unshare; fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    [ "$mode" = root ] || { log "mmdebstrap is missing; install it (apt-get install mmdebstrap) or run as root"; exit 1; }
    log "installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only when the package lists do not know mmdebstrap.
    if ! apt-cache show mmdebstrap >/dev/null 2>&1; then apt-get update; fi
    if ! apt-get install -y --no-install-recommends mmdebstrap; then
        apt-get update
        apt-get install -y --no-install-recommends mmdebstrap
    fi
fi
for t in tar gzip; do
    command -v "$t" >/dev/null 2>&1 || { log "$t is required"; exit 1; }
done

# --- Sources: the Debian mirror the host's apt uses --------------------------

if [ -z "${SUITE:-}" ]; then
    # shellcheck source=/dev/null
    SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true
    SUITE=${SUITE:-bookworm}
fi

sources=()
if [ -n "${MIRROR:-}" ]; then
    sources+=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
    [ -z "${SECURITY_MIRROR:-}" ] || sources+=("deb $SECURITY_MIRROR $SUITE-security main")
else
    # Every Debian archive entry of the host's apt configuration (both the
    # one-line and the deb822 format) for SUITE, SUITE-updates and
    # SUITE-security; third-party repositories are left out.
    while read -r uri release origin; do
        case "$release" in "$SUITE" | "$SUITE-updates" | "$SUITE-security") ;; *) continue ;; esac
        case "$origin" in
        Debian) ;;
        "") case "$uri" in */debian/ | */debian-security/) ;; *) continue ;; esac ;;
        *) continue ;;
        esac
        sources+=("deb $uri $release main")
    done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(ORIGIN)' 'Created-By: Packages' 2>/dev/null | sort -u)
    if [ ${#sources[@]} -eq 0 ]; then
        log "no $SUITE entry in the host's apt sources; using deb.debian.org"
        sources=(
            "deb http://deb.debian.org/debian $SUITE main"
            "deb http://deb.debian.org/debian $SUITE-updates main"
            "deb http://deb.debian.org/debian-security $SUITE-security main"
        )
    fi
fi
if [ -n "${SECURITY_MIRROR:-}" ] && [ -z "${MIRROR:-}" ]; then
    # An explicit security mirror replaces the host's.
    filtered=()
    for s in "${sources[@]}"; do case "$s" in *" $SUITE-security "*) ;; *) filtered+=("$s") ;; esac; done
    sources=("${filtered[@]}" "deb $SECURITY_MIRROR $SUITE-security main")
fi

# --- Work directory and cleanup ---------------------------------------------

out_dir=$(cd "$(dirname "$output")" && pwd)
out_final="$out_dir/$(basename "$output")"
work=$(mktemp -d /var/tmp/clawdspace-base.XXXXXX)
chmod 0755 "$work" # readable by apt's _apt sandbox user
partial="$out_dir/.$(basename "$output").partial.$$"

cleanup() {
    local rc=$?
    # mmdebstrap unmounts what it mounted, also on failure; should it have
    # been killed, unmount whatever is left under the work directory (deepest
    # first) before deleting it, and never cross into a mounted file system.
    local m
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v w="$work" 'index($2, w "/") == 1 { print $2 }' /proc/mounts | sort -r)
    if awk -v w="$work" 'index($2, w "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        log "warning: mounts left under $work; not deleting it"
    else
        rm -rf --one-file-system "$work"
    fi
    rm -f "$partial" "$partial.gz"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Build -------------------------------------------------------------------

include=$(IFS=,; echo "${pkgs[*]}")
log "variant $variant, suite $SUITE, mode $mode"
for s in "${sources[@]}"; do log "source: $s"; done
log "packages: $include"

# Hooks run with the root filesystem as $1.
# 1. The `sandbox` user: uid/gid 1000, home /home/sandbox, bash.
hook_user='set -e
chroot "$1" groupadd --gid 1000 sandbox
chroot "$1" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/sandbox --shell /bin/bash --comment "Clawdspace sandbox" sandbox
grep -q "^sandbox:x:1000:1000:" "$1/etc/passwd"
grep -q "^sandbox:x:1000:" "$1/etc/group"'
# 2. /workspace (GPU spaces and volumes use it), owned by sandbox.
hook_workspace='set -e
install -d -m 0755 -o 1000 -g 1000 "$1/workspace"'
# 3. Host-independent identity files; the runtime sets the hostname (UTS
#    namespace) and is responsible for DNS, so resolv.conf stays empty
#    instead of carrying the build host's resolver.
hook_etc='set -e
echo clawdspace > "$1/etc/hostname"
printf "%s\n" "127.0.0.1	localhost" "::1	localhost ip6-localhost ip6-loopback" "ff02::1	ip6-allnodes" "ff02::2	ip6-allrouters" > "$1/etc/hosts"
rm -f "$1/etc/resolv.conf"
echo "# provided by the Clawdspace runtime" > "$1/etc/resolv.conf"'
# 4. Locale C.UTF-8 (built into Debian glibc; no locales package needed).
hook_locale='set -e
echo LANG=C.UTF-8 > "$1/etc/default/locale"
printf "%s\n" "# Clawdspace: UTF-8 by default" ": \"\${LANG:=C.UTF-8}\"" "export LANG" > "$1/etc/profile.d/01-locale.sh"'
# 5. Spaces run unprivileged: let `pip install` and `npm install -g` work for
#    the sandbox user (they install under ~/.local) instead of refusing
#    (PEP 668 EXTERNALLY-MANAGED) or failing on /usr/local.
hook_user_tools='set -e
rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED
if [ -x "$1/usr/bin/npm" ]; then
  echo "prefix=/home/sandbox/.local" > "$1/home/sandbox/.npmrc"
  chown 1000:1000 "$1/home/sandbox/.npmrc"
fi
install -d -m 0755 -o 1000 -g 1000 "$1/home/sandbox/.local" "$1/home/sandbox/.local/bin"'
# 6. Size: no caches, logs or backup files (mmdebstrap removes the apt lists
#    and the apt cache itself).
hook_clean='set -e
rm -f "$1"/var/lib/dpkg/*-old "$1"/var/cache/debconf/*-old
rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/root/.cache "$1"/root/.npm
find "$1/var/log" -type f -delete'

mmdebstrap_args=(
    --mode="$mode"
    --variant=minbase
    --format=tar
    --include="$include"
    # Keep docs, man pages and translations out (also for packages installed
    # later, as in the official Debian/Ubuntu container images).
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --aptopt='Acquire::Languages "none"'
    --aptopt='APT::Install-Recommends "false"'
    --customize-hook="$hook_user"
    --customize-hook="$hook_workspace"
    --customize-hook="$hook_etc"
    --customize-hook="$hook_locale"
    --customize-hook="$hook_user_tools"
    --customize-hook="$hook_clean"
    # No device nodes: the runtime gives every space its own /dev.
    --skip=output/dev
)

TMPDIR="$work" mmdebstrap "${mmdebstrap_args[@]}" "$SUITE" "$partial" "${sources[@]}"

# --skip=output/dev leaves /dev out entirely; add it back as an empty
# directory (mount point of the space's /dev).
mkdir -m 0755 "$work/dev"
tar --append --file="$partial" --format=pax --numeric-owner --owner=0 --group=0 \
    --mtime="@${SOURCE_DATE_EPOCH:-$start}" -C "$work" ./dev
rmdir "$work/dev"

# Sanity checks on the result (grep reads all input: no SIGPIPE for tar).
tar -xOf "$partial" ./etc/passwd | grep '^sandbox:x:1000:1000:[^:]*:/home/sandbox:/bin/bash$' >/dev/null ||
    { log "no sandbox user in the tarball"; exit 1; }
tar -tvf "$partial" --numeric-owner --no-recursion ./home/sandbox/ | grep '^d[^ ]* 1000/1000 ' >/dev/null ||
    { log "/home/sandbox is not owned by 1000:1000"; exit 1; }

if [ "$compress" = gzip ]; then
    gzip -n -6 "$partial"
    mv -f "$partial.gz" "$out_final"
else
    mv -f "$partial" "$out_final"
fi

end=$(date +%s)
bytes=$(stat -c %s "$out_final")
log "wrote $out_final: $bytes bytes ($(numfmt --to=iec-i --suffix=B "$bytes")), variant $variant, $((end - start)) s"
