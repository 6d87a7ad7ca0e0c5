#!/usr/bin/env python3
"""Builds the Lambda packages and checks them.

For each package: the function binary as `bootstrap` (runtime
provided.al2023) and its model folder, weights and licences, zipped into
`$CARGO_TARGET_DIR/lambda/NAME.zip` (`target/` by default):

    face-crop.zip   bootstrap (face-crop), models/blazeface/, dlib's landmark model
    classify.zip    bootstrap (classify),  models/age-gender/ nets (age and gender)

The binaries are built with cargo-zigbuild against glibc 2.34, Amazon
Linux 2023's, for x86_64 or (`--arch arm64`, into `lambda-arm64/`) for
Graviton (the machine's own glibc is newer, and a plain build asks for
symbols 2023 does not have). The checks, each failing the script:

    zip <= 50 MB (Lambda's direct-upload limit)
    unzipped <= 250 MB (Lambda's limit for a function and its layers)
    no GLIBC_x.y symbol version newer than 2.34 in bootstrap

Needs: cargo-zigbuild (installed with `cargo install` if missing) and
zig, from the `ziglang` PyPI package (installed into .services/zig, or
$LAMBDEX_SERVICES_DIR/zig, if missing). Prints the sizes. `--skip-build` checks what is there;
`--smoke` then runs the unzipped packages on the local Lambda.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where cargo builds: CARGO_TARGET_DIR (relative to the checkout) or target/.
TARGET_DIR = ROOT / os.environ.get("CARGO_TARGET_DIR", "target")
# Where installed tools live: LAMBDEX_SERVICES_DIR or the git-ignored .services/.
SERVICES_DIR = ROOT / os.environ.get("LAMBDEX_SERVICES_DIR", ".services")
# Lambda's architectures and the Rust targets they build for.
TARGETS = {"x86_64": "x86_64-unknown-linux-gnu", "arm64": "aarch64-unknown-linux-gnu"}
GLIBC_MAX = (2, 34)  # Amazon Linux 2023
ZIP_MAX = 50 * 1024 * 1024
UNZIPPED_MAX = 250 * 1024 * 1024
CARGO_ZIGBUILD = "0.24.1"
ZIGLANG = "ziglang==0.17.1"

# Each package's binary and its model files under models/ (a folder: all of it).
LANDMARKS = ["age-gender/shape_predictor_5_face_landmarks.dat",
             "age-gender/dlib-shape-predictor-5-face-landmarks.md"]
NETS = ["age-gender/age-v1.onnx", "age-gender/gender-v1.onnx",
        "age-gender/manifest.json", "age-gender/NOTICE.md"]
PACKAGES = {
    "face-crop": ("face-crop", ["blazeface"] + LANDMARKS),
    "classify": ("classify", NETS),
}


def run(command, **kwargs):
    print("+", " ".join(str(part) for part in command), file=sys.stderr)
    subprocess.run(command, check=True, **kwargs)


def zig_env():
    """The environment in which cargo-zigbuild finds zig (`python3 -m ziglang`)."""
    zig_dir = SERVICES_DIR / "zig"
    if not (zig_dir / "ziglang").exists():
        run([sys.executable, "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "--target", str(zig_dir), ZIGLANG])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(zig_dir), env.get("PYTHONPATH")]))
    return env


def ensure_cargo_zigbuild():
    if shutil.which("cargo-zigbuild") is None:
        run(["cargo", "install", "--locked", "cargo-zigbuild", "--version", CARGO_ZIGBUILD])


def ensure_rust_target(target):
    installed = subprocess.run(["rustup", "target", "list", "--installed"], check=True,
                               capture_output=True, text=True).stdout.split()
    if target not in installed:
        run(["rustup", "target", "add", target])


def build(target):
    ensure_rust_target(target)
    ensure_cargo_zigbuild()
    env = zig_env()
    # No debug info in what ships: smaller zips, same code.
    env["CARGO_PROFILE_RELEASE_DEBUG"] = "false"
    env["CARGO_PROFILE_RELEASE_STRIP"] = "debuginfo"
    run(["cargo", "zigbuild", "--release", "--locked", "-p", "lambdex-functions",
         "--bin", "face-crop", "--bin", "classify",
         "--target", f"{target}.{GLIBC_MAX[0]}.{GLIBC_MAX[1]}"], cwd=ROOT, env=env)


def glibc_versions(binary):
    """Every GLIBC_x.y[.z] symbol version the binary asks for: objdump's
    dynamic symbols, or for a binary this machine's objdump cannot read (an
    arm64 one on x86) the version names in the file itself."""
    listed = subprocess.run(["objdump", "-T", str(binary)], capture_output=True, text=True)
    output = listed.stdout if listed.returncode == 0 else binary.read_bytes().decode("latin-1")
    found = set()
    for match in re.finditer(r"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?", output):
        found.add(tuple(int(part) for part in match.groups() if part is not None))
    return sorted(found)


def model_files(entries):
    """The files each entry names under models/ (a folder: every file in it)."""
    models = ROOT / "models"
    for entry in entries:
        path = models / entry
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file())
        elif path.is_file():
            yield path
        else:
            sys.exit(f"{path} is missing")


def package(name, binary_name, model_entries, out_dir, target):
    binary = TARGET_DIR / target / "release" / binary_name
    models = ROOT / "models"
    if not binary.exists():
        sys.exit(f"{binary} is missing: build first (without --skip-build)")
    archive = out_dir / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (0o100755 << 16)  # a regular, executable file
        info.compress_type = zipfile.ZIP_DEFLATED
        info.date_time = (2026, 1, 1, 0, 0, 0)
        zf.writestr(info, binary.read_bytes())
        for path in model_files(model_entries):
            zf.write(path, f"models/{path.relative_to(models)}")
    with zipfile.ZipFile(archive) as zf:
        unzipped = sum(entry.file_size for entry in zf.infolist())
        names = zf.namelist()
    return {
        "name": name,
        "zip": archive,
        "zip_bytes": archive.stat().st_size,
        "unzipped_bytes": unzipped,
        "bootstrap_bytes": binary.stat().st_size,
        "glibc": glibc_versions(binary),
        "files": names,
    }


def check(result):
    problems = []
    if result["zip_bytes"] > ZIP_MAX:
        problems.append(f"zip is {mb(result['zip_bytes'])}, over {mb(ZIP_MAX)}")
    if result["unzipped_bytes"] > UNZIPPED_MAX:
        problems.append(f"unzipped it is {mb(result['unzipped_bytes'])}, over {mb(UNZIPPED_MAX)}")
    too_new = [v for v in result["glibc"] if v[:2] > GLIBC_MAX]
    if too_new:
        problems.append("bootstrap needs glibc " + ", ".join(".".join(map(str, v)) for v in too_new)
                        + f", newer than Amazon Linux 2023's {GLIBC_MAX[0]}.{GLIBC_MAX[1]}")
    if "bootstrap" not in result["files"]:
        problems.append("no bootstrap at the zip's root")
    return problems


def smoke(out_dir):
    """Unzips the packages and labels the test photo through them: the
    local Lambda runs each `bootstrap` with LAMBDA_TASK_ROOT at its
    unzipped folder, as Lambda does, and `lambdex predict --remote` calls
    them. Needs the release `lambdex` (`cargo build --release`)."""
    import socket
    import tempfile
    import time

    lambdex = TARGET_DIR / "release" / "lambdex"
    if not lambdex.exists():
        sys.exit(f"--smoke needs {lambdex}: cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {}
        for name in PACKAGES:
            root = tmp / name
            with zipfile.ZipFile(out_dir / f"{name}.zip") as zf:
                zf.extractall(root)
            (root / "bootstrap").chmod(0o755)
            roots[name] = root
        functions = {"face-crop": ("face-crop", {}), "age": ("classify", {"LAMBDEX_MODEL": "age"}),
                     "gender": ("classify", {"LAMBDEX_MODEL": "gender"})}
        config = ""
        for function, (package_name, env) in functions.items():
            env = dict(env, LAMBDA_TASK_ROOT=str(roots[package_name]))
            pairs = ", ".join(f'{key} = "{value}"' for key, value in env.items())
            config += (f"[functions.{function}]\ncommand = [\"{roots[package_name] / 'bootstrap'}\"]\n"
                       f"environment = {{ {pairs} }}\n")
        (tmp / "local-lambda.toml").write_text(config)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([str(lambdex), "local-lambda", "--config", str(tmp / "local-lambda.toml"),
                                   "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            server.stdout.readline()  # "local Lambda listening on …"
            env = dict(os.environ, LAMBDEX__LAMBDA__ENDPOINT_URL=f"http://127.0.0.1:{port}",
                       LAMBDEX__LAMBDA__CREDENTIALS="local")
            photo = ROOT / "tests" / "fixtures" / "astronaut.png"
            started = time.monotonic()
            output = subprocess.run([str(lambdex), "predict", "--remote", "--json", str(photo)],
                                    env=env, capture_output=True, text=True)
        finally:
            server.terminate()
            server.wait()
    if output.returncode != 0:
        sys.exit(f"smoke: the packaged functions failed: {output.stderr}")
    doc = json.loads(output.stdout)
    faces = doc["faces"]
    if len(faces) != 1 or "age" not in faces[0] or "gender" not in faces[0]:
        sys.exit(f"smoke: expected one labelled face, got {doc}")
    print(f"smoke: the packages labelled {photo.name} (1 face, age {faces[0]['age']['years']:.1f}, "
          f"{faces[0]['gender']['label']}) in {time.monotonic() - started:.1f} s, cold starts included")


def mb(size):
    return f"{size / 1024 / 1024:.1f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-build", action="store_true",
                        help="package and check the binaries already built")
    parser.add_argument("--smoke", action="store_true",
                        help="then run the packages on the local Lambda (needs the release lambdex)")
    parser.add_argument("--arch", choices=sorted(TARGETS), default="x86_64",
                        help="the Lambda architecture to build for")
    args = parser.parse_args()
    target = TARGETS[args.arch]
    if args.smoke and not target.startswith(os.uname().machine):
        sys.exit(f"--smoke runs the packages here: this {os.uname().machine} machine "
                 f"cannot run {args.arch} binaries")
    if not args.skip_build:
        build(target)
    out_dir = TARGET_DIR / ("lambda" if args.arch == "x86_64" else f"lambda-{args.arch}")
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    print(f"{'package':<10} {'zip':>10} {'unzipped':>10} {'bootstrap':>10}  newest glibc  checks")
    for name, (binary_name, model_entries) in PACKAGES.items():
        result = package(name, binary_name, model_entries, out_dir, target)
        problems = check(result)
        newest = ".".join(map(str, result["glibc"][-1])) if result["glibc"] else "-"
        print(f"{name:<10} {mb(result['zip_bytes']):>10} {mb(result['unzipped_bytes']):>10} "
              f"{mb(result['bootstrap_bytes']):>10}  {newest:<12}  {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {name}: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
    print(f"limits: zip {mb(ZIP_MAX)}, unzipped {mb(UNZIPPED_MAX)}, "
          f"glibc {GLIBC_MAX[0]}.{GLIBC_MAX[1]}; packages in {out_dir}/")
    if failed:
        sys.exit(1)
    if args.smoke:
        smoke(out_dir)


if __name__ == "__main__":
    main()
