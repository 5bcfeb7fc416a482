#!/usr/bin/env bash
# `make device-bundle`: everything a bare, offline GPU machine needs for `make gpu-check`,
# made here where the package registries answer. Idempotent; reruns only re-stamp.
#   .whl/   pinned wheels of every dependency the GPU image lacks (CPython 3.12, manylinux
#           x86_64 or pure Python), SHA256SUMS of them, and source.json + tree.sha256: the
#           commit and the sums of its tracked files, so a machine without .git can still
#           tell which commit it ran;
#   .data/  the CIFAR-10 archive (checked against its sha256) and its SHA256SUMS;
#   .gpu-image/  a stand-in for the GPU image on this machine (a venv of this Python with
#           only the image's packages, and the wheels for this Python in .gpu-image/whl),
#           which `make gpu-check-dry` uses exactly as the GPU machine uses its python3.
# Then it prints the bundle's size and fails if the working tree that travels to the GPU
# machine (tracked + untracked-not-ignored files, .whl, .data) reaches 64 MiB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
SHARED_DATA=${SHARED_DATA:-../shared/data}
WHEELS=.whl
DATA=.data
IMAGE=${GPU_IMAGE:-.gpu-image}
ARCHIVE=cifar10-jpeg.tar.gz
ARCHIVE_SHA256=7854ea059adc7729ab5267c5269ccc01e6eaeea6549d5f3c834c106bae86e8ee
LIMIT_MIB=64

# What pyproject.toml needs and the GPU image lacks, pinned to the versions the project's
# .venv resolves. The image already holds torch, torchvision, tensorboard, rich, matplotlib,
# pillow, numpy, cloudpickle, pytest, PyYAML, packaging and typing-extensions.
PINS=(
    hydra-core==1.3.8
    omegaconf==2.3.1
    antlr4-python3-runtime==4.9.3
    submitit==1.5.4
    hydra-submitit-launcher==1.2.0
    prodigyopt==1.1.2
    dadaptation==3.2
    schedulefree==1.4.1
    dog-optimizer==1.0.3
)
# The stand-in image: the GPU image's packages that this project uses (torch and
# torchvision at the newest releases installable here).
IMAGE_PACKAGES=(
    torch==2.14.1 torchvision==0.29.1 tensorboard rich matplotlib pillow numpy cloudpickle
    pytest pyyaml packaging typing-extensions
)
TARGET=(--python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)

# pip run by interpreter $1, without the notes this machine's pip configuration adds.
pip_with() {
    local python=$1 rc=0 log
    shift
    log=$(mktemp)
    "$python" -m pip "$@" >"$log" 2>&1 || rc=$?
    grep -v "is ignored: it is neither" "$log" || true
    rm -f "$log"
    return "$rc"
}
pip() { pip_with "$PYTHON" "$@"; }
shopt -s nocaseglob  # wheel files may capitalise a name (PyYAML-...)
wheel_name() { echo "${1%%==*}" | tr 'A-Z-' 'a-z_'; }  # a distribution's name in wheel files

# ---------------------------------------------------------------------------- wheels
mkdir -p "$WHEELS"
for pin in "${PINS[@]}"; do
    name=$(wheel_name "$pin")
    version=${pin##*==}
    if compgen -G "$WHEELS/${name}-${version}-*.whl" >/dev/null; then continue; fi
    echo "device-bundle: fetching $pin"
    pip download -q --no-deps --only-binary=:all: "${TARGET[@]}" -d "$WHEELS" "$pin" \
        >/dev/null 2>&1 || true
    if ! compgen -G "$WHEELS/${name}-${version}-*.whl" >/dev/null; then
        # Published as a source archive only: build it here (pure Python, so any CPython).
        pip wheel -q --no-deps -w "$WHEELS" "$pin"
    fi
    compgen -G "$WHEELS/${name}-${version}-*.whl" >/dev/null \
        || { echo "device-bundle: no wheel of $pin" >&2; exit 1; }
done
# Only the pinned wheels, one version each: two versions of one package stop the install.
for file in "$WHEELS"/*.whl; do
    base=$(basename "$file")
    wanted=0
    for pin in "${PINS[@]}"; do
        case $base in "$(wheel_name "$pin")-${pin##*==}-"*) wanted=1 ;; esac
    done
    if [ "$wanted" = 0 ]; then
        echo "device-bundle: removing stale $base"
        rm -f "$file"
        continue
    fi
    case $base in
        *-none-any.whl | *-cp312-*manylinux*x86_64*.whl | *-abi3-*manylinux*x86_64*.whl) ;;
        *) echo "device-bundle: $base does not run on CPython 3.12 x86_64" >&2; exit 1 ;;
    esac
done
(cd "$WHEELS" && sha256sum -- *.whl >SHA256SUMS)

# Which commit travels: git may not travel with the tree, so the sums of the tracked files
# let the GPU machine check that its tree is this commit (as it is now, dirty or not).
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=false
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then dirty=true; fi
git ls-files -z | xargs -0 -r sha256sum -- >"$WHEELS/tree.sha256" 2>/dev/null || true
printf '{"commit": "%s", "dirty": %s, "stamped_utc": "%s"}\n' \
    "$commit" "$dirty" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$WHEELS/source.json"
if [ "$dirty" = true ]; then
    echo "device-bundle: WARNING: uncommitted changes; results will say <commit>+dirty" >&2
fi

# ------------------------------------------------------------------------------ data
mkdir -p "$DATA"
if [ ! -f "$DATA/$ARCHIVE" ]; then
    [ -f "$SHARED_DATA/$ARCHIVE" ] || { echo "device-bundle: no $SHARED_DATA/$ARCHIVE" >&2; exit 1; }
    cp "$SHARED_DATA/$ARCHIVE" "$DATA/$ARCHIVE.part"
    chmod u+w "$DATA/$ARCHIVE.part"
    mv "$DATA/$ARCHIVE.part" "$DATA/$ARCHIVE"
fi
echo "$ARCHIVE_SHA256  $ARCHIVE" >"$DATA/SHA256SUMS"
(cd "$DATA" && sha256sum --quiet --strict -c SHA256SUMS) \
    || { echo "device-bundle: $DATA/$ARCHIVE is not the expected archive" >&2; rm -f "$DATA/$ARCHIVE"; exit 1; }

# ------------------------------------------------------------------ stand-in GPU image
# Rebuilt only when the list above changes. No package of ours goes into it. Made from
# .venv's site-packages by hard links (torch alone is over 5 GB, so a second install could
# fill a CI machine's disk), then pruned to the dependency closure of the image's packages:
# hydra, omegaconf and the rest must come from the wheels, as on the GPU machine.
VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python}
image_key=$(printf '%s\n' "$("$PYTHON" -V 2>&1)" "${IMAGE_PACKAGES[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$IMAGE/.installed" 2>/dev/null)" != "$image_key" ]; then
    echo "device-bundle: building the stand-in GPU image $IMAGE"
    rm -rf "$IMAGE"
    "$PYTHON" -m venv --without-pip "$IMAGE"
    source_site=$("$VENV_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    image_site=$("$IMAGE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ -x "$VENV_PYTHON" ] && "$VENV_PYTHON" -c 'import torch, torchvision' 2>/dev/null \
        && [ "$("$VENV_PYTHON" -V 2>&1)" = "$("$PYTHON" -V 2>&1)" ]; then
        rmdir "$image_site" 2>/dev/null || rm -rf "$image_site"
        cp -al "$source_site" "$image_site" 2>/dev/null || cp -a "$source_site" "$image_site"
        "$IMAGE/bin/python" scripts/gpu_check_support.py prune-image "${IMAGE_PACKAGES[@]%%==*}"
    else
        "$IMAGE/bin/python" -m ensurepip -q
        pip_with "$IMAGE/bin/python" install -q "${IMAGE_PACKAGES[@]}"
    fi
    echo "$image_key" >"$IMAGE/.installed"
fi
# The same wheels for the stand-in's Python: pure ones as they are, others fetched for it.
rm -rf "$IMAGE/whl"
mkdir -p "$IMAGE/whl"
image_tag=$("$IMAGE/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
for file in "$WHEELS"/*.whl; do
    base=$(basename "$file")
    case $base in
        *-none-any.whl) cp "$file" "$IMAGE/whl/" ;;
        *)
            IFS=- read -r name version _ <<<"$base"
            pip download -q --no-deps --only-binary=:all: --python-version "$image_tag" \
                --implementation cp --platform manylinux_2_17_x86_64 \
                --platform manylinux2014_x86_64 -d "$IMAGE/whl" "$name==$version"
            ;;
    esac
done
(cd "$IMAGE/whl" && sha256sum -- *.whl >SHA256SUMS)

# -------------------------------------------------------------------------- the size
tree_bytes=$(git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -r stat -L --printf='%s\n' -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
bundle_bytes=$(du -sb "$WHEELS" "$DATA" | awk '{s += $1} END {print s}')
total=$((tree_bytes + bundle_bytes))
# A shared/ folder inside the checkout travels too, ignored or not (a link only as a link).
if [ -d shared ] && [ ! -L shared ] && git check-ignore -q shared; then
    total=$((total + $(du -sb shared | cut -f1)))
fi
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "device-bundle: .whl $(mib "$(du -sb "$WHEELS" | cut -f1)") ($(ls "$WHEELS"/*.whl | wc -l)" \
    "wheels), .data $(mib "$(du -sb "$DATA" | cut -f1)"): bundle $(mib "$bundle_bytes")"
echo "device-bundle: working tree that travels with carry [\".whl\", \".data\"]:" \
    "$(mib "$total") of $LIMIT_MIB MiB (commit ${commit:0:10}$([ "$dirty" = true ] && echo +dirty))"
if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
    echo "device-bundle: over the $LIMIT_MIB MiB a device call may carry" >&2
    exit 1
fi
