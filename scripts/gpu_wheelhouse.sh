#!/usr/bin/env bash
# Wheels for the GPU machine (DEVELOPERS.md, "GPU machine"): it has CUDA torch and a list of common packages but no
# network, so nerfstudio, k-diffusion and the rest of what genvs-ns imports travel with the working tree as wheels.
#
#   scripts/gpu_wheelhouse.sh            download scripts/gpu_wheelhouse.txt's wheels for CPython 3.12 manylinux x86_64
#                                        into .whl/ (ignored), add a wheel of genvs-ns, print the size (fails > 60 MiB)
#   scripts/gpu_wheelhouse.sh --verify   prove the list complete here: the same wheels built for this python3, a
#                                        clean venv with torch/torchvision and the GPU machine's preinstalled packages
#                                        only, the GPU machine's install line, then ns-train genvs-tiny (3 steps),
#                                        genvs-sample (2 frames) and ns-eval on toy data; prints OK
#
# Options: --python-version X.Y (default 3.12; --verify: this python3's), --dest DIR (default .whl; --verify:
# $WH_WORK/whl). Environment: PYTHON (python3), WH_WORK (/tmp/wh, --verify's scratch folder),
# VERIFY_TORCH ("torch==2.14.1 torchvision==0.29.1", from local disk here), WH_LIMIT_MIB (60).
# Run here, where the package registry is reachable. On the GPU machine, with `.whl` in the run's carry:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQS=$ROOT/scripts/gpu_wheelhouse.txt
PYTHON=${PYTHON:-python3}
WORK=${WH_WORK:-/tmp/wh}
LIMIT_MIB=${WH_LIMIT_MIB:-60}
VERIFY_TORCH=${VERIFY_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
VERIFY=0
PYVER=""
DEST=""

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --verify) VERIFY=1 ;;
        --python-version) PYVER=$2; shift ;;
        --dest) DEST=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_wheelhouse.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [[ $VERIFY == 1 ]]; then
    PYVER=${PYVER:-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
    DEST=${DEST:-$WORK/whl}
else
    PYVER=${PYVER:-3.12}
    DEST=${DEST:-$ROOT/.whl}
fi
DEST=$(realpath -m "$DEST")

# pip's "Location ... is ignored" lines about local extra indexes are noise here.
quiet_pip() { "$PYTHON" -m pip "$@" 2> >(grep -v -e 'is ignored: it is neither a file nor a directory' >&2); }

requirements() { sed 's/#.*//' "$REQS" | awk 'NF { print $1 }'; }      # the carried wheels, name==version
preinstalled() { awk '$1 == "#@" { print $2 }' "$REQS"; }              # on the GPU machine and imported

build_wheelhouse() {
    local start=$SECONDS
    rm -rf "$DEST"
    mkdir -p "$DEST"
    # Compiled wheels for the target CPython and manylinux x86_64 (the device notes' tags); pure ones match any.
    local platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$p")
    done
    mapfile -t reqs < <(requirements)
    echo "gpu_wheelhouse: downloading ${#reqs[@]} wheels for CPython $PYVER into $DEST"
    quiet_pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        "${platforms[@]}" -d "$DEST" "${reqs[@]}"
    # genvs-ns from a clean copy of the working tree (tracked and untracked-not-ignored files): an in-tree build
    # would package whatever stale modules an earlier build left in build/.
    local src
    src=$(mktemp -d)
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
            tar --null -T - -cf -) | tar -xf - -C "$src"
    else
        (cd "$ROOT" && tar --exclude=./.venv --exclude=./.whl --exclude=./outputs --exclude=./build -cf - .) |
            tar -xf - -C "$src"
    fi
    quiet_pip wheel -q --no-deps "$src" -w "$DEST"
    rm -rf "$src"

    local n have want
    n=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
    want=$((${#reqs[@]} + 1))
    if [[ $n != "$want" ]]; then
        echo "gpu_wheelhouse: $n wheels in $DEST, expected $want (one per requirement, one version each)" >&2
        exit 1
    fi
    (cd "$DEST" && ls -S -l ./*.whl | awk '{ printf "  %8.2f MiB  %s\n", $5 / 1048576, substr($9, 3) }')
    have=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' -printf '%s\n' | awk '{ s += $1 } END { printf "%.1f", s / 1048576 }')
    echo "gpu_wheelhouse: $n wheels, $have MiB in $DEST (limit $LIMIT_MIB MiB), $((SECONDS - start)) s"
    if awk -v h="$have" -v l="$LIMIT_MIB" 'BEGIN { exit !(h > l) }'; then
        echo "gpu_wheelhouse: over the $LIMIT_MIB MiB limit" >&2
        exit 1
    fi
}

verify() {
    local start=$SECONDS t venv=$WORK/venv site=$WORK/site
    rm -rf "$venv" "$site" "$WORK/data" "$WORK/runs" "$WORK/sample" "$WORK/eval"
    "$PYTHON" -m venv "$venv"
    local py=$venv/bin/python
    cd "$WORK"   # not the repository, whose genvs_ns.egg-info pip and python would see in the working directory
    echo "gpu_wheelhouse --verify: clean venv $venv with $VERIFY_TORCH"
    # shellcheck disable=SC2086 # VERIFY_TORCH is a list of requirements
    PYTHON=$py quiet_pip install -q $VERIFY_TORCH
    "$py" -m pip freeze | grep -i -E '^(torch|torchvision)==' >"$WORK/constraints.txt"
    mapfile -t pre < <(preinstalled)
    echo "gpu_wheelhouse --verify: + the GPU machine's ${#pre[@]} preinstalled packages that these commands import"
    PYTHON=$py quiet_pip install -q -c "$WORK/constraints.txt" "${pre[@]}"
    # Whatever those pulled in that the GPU machine does not have goes, so the wheelhouse alone must make up the rest.
    local extra
    extra=$("$py" -I - "$REQS" <<'EOF'
import importlib.metadata as md, re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
image = {w for line in open(sys.argv[1]) if line.startswith("#% ") for w in line.split()[1:]}
names = {norm(d.metadata["Name"]) for d in md.distributions()}
print(" ".join(sorted(n for n in names if n not in image and not n.startswith("nvidia-"))))
EOF
)
    if [[ -n $extra ]]; then
        echo "gpu_wheelhouse --verify: removing what the GPU machine lacks: $extra"
        # shellcheck disable=SC2086
        "$py" -m pip uninstall -q -y $extra
    fi
    "$py" -m pip list --format=freeze | grep -i -E '^(torch|torchvision|numpy|setuptools|scipy|numba|matplotlib)==' |
        tr '\n' ' ' | sed 's/^/gpu_wheelhouse --verify: base: /; s/$/\n/'
    echo "gpu_wheelhouse --verify: base ready, $((SECONDS - start)) s"

    # The GPU machine's install line, with --target and PYTHONPATH as there.
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$DEST"/*.whl
    export PYTHONPATH=$site PATH=$site/bin:$PATH
    "$py" -W ignore - "$site" <<'EOF'
import sys
import genvs_ns, k_diffusion, nerfstudio, pkg_resources  # noqa: F401  pkg_resources: the carried setuptools'
for m in (genvs_ns, nerfstudio, pkg_resources):
    assert m.__file__.startswith(sys.argv[1]), f"{m.__name__} from {m.__file__}, not from the wheelhouse"
EOF

    local small=(--vis tensorboard --logging.steps-per-log 1 --pipeline.datamanager.objects-per-batch 2
        --pipeline.model.volume-resolution 16 --pipeline.model.volume-depth 8 --pipeline.model.decoder-channels 32
        --pipeline.model.num-coarse-samples 8 --pipeline.model.num-importance-samples 8)
    genvs-toy-data "$WORK/data" --num-objects 6 --num-views 6 --resolution 32 >/dev/null
    t=$SECONDS
    ns-train genvs-tiny --data "$WORK/data" --max-num-iterations 3 --output-dir "$WORK/runs" --experiment-name e \
        --timestamp t "${small[@]}" >"$WORK/train.log" 2>&1 || { tail -30 "$WORK/train.log"; exit 1; }
    local config=$WORK/runs/e/genvs-tiny/t/config.yml
    ls "$WORK"/runs/e/genvs-tiny/t/nerfstudio_models/step-*.ckpt >/dev/null
    echo "gpu_wheelhouse --verify: ns-train genvs-tiny, 3 steps: ok ($((SECONDS - t)) s)"
    t=$SECONDS
    genvs-sample --load-config "$config" --output-dir "$WORK/sample" --num-frames 2 --steps 2 \
        >"$WORK/sample.log" 2>&1 || { tail -30 "$WORK/sample.log"; exit 1; }
    [[ -s $WORK/sample/samples.mp4 && -s $WORK/sample/frames/00001.png ]]
    echo "gpu_wheelhouse --verify: genvs-sample, 2 frames: ok ($((SECONDS - t)) s)"
    t=$SECONDS
    ns-eval --load-config "$config" --output-path "$WORK/eval/eval.json" --render-output-path "$WORK/eval/renders" \
        >"$WORK/eval.log" 2>&1 || { tail -30 "$WORK/eval.log"; exit 1; }
    [[ -s $WORK/eval/eval.json ]]
    echo "gpu_wheelhouse --verify: ns-eval: ok ($((SECONDS - t)) s)"
    echo "gpu_wheelhouse --verify: OK ($((SECONDS - start)) s in all)"
}

build_wheelhouse
if [[ $VERIFY == 1 ]]; then
    verify
fi
