"""Install SpinBot's requirements into the Python that runs this script, and optionally its models.

    python install.py                         # requirements (what ComfyUI-Manager runs)
    python install.py --models direct         # + the models of a preset, downloaded and verified
    python install.py --models direct --dry-run   # only say what goes where
    python install.py --list                  # presets and models

Idempotent: satisfied requirements and verified model files are left alone. torch, torchvision
and torchaudio are never installed, upgraded or downgraded: ComfyUI owns them, so pip runs with a
constraint that holds them at the installed versions.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(HERE, "nodes", "data", "models.json")
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")


def install_requirements() -> int:
    constraints = []
    for name in TORCH_FAMILY:
        try:
            constraints.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(constraints) + "\n")
        constraint_file = f.name
    try:
        cmd = [sys.executable, "-m", "pip", "install", "-r", os.path.join(HERE, "requirements.txt"),
               "-c", constraint_file]
        print("running:", " ".join(cmd), flush=True)
        return subprocess.call(cmd)
    finally:
        os.unlink(constraint_file)


def default_models_dir() -> str:
    """ComfyUI's models folder when the pack sits in ComfyUI/custom_nodes, else ./models."""
    if os.environ.get("SPINBOT_MODELS_DIR"):
        return os.environ["SPINBOT_MODELS_DIR"]
    comfy_models = os.path.normpath(os.path.join(HERE, "..", "..", "models"))
    if os.path.basename(os.path.dirname(HERE)) == "custom_nodes" and os.path.isdir(comfy_models):
        return comfy_models
    return os.path.abspath("models")


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: str, entry: dict) -> bool:
    if not os.path.exists(path):
        return False
    if os.path.isdir(path):
        return bool(os.listdir(path))
    if entry.get("size_bytes") and os.path.getsize(path) != entry["size_bytes"]:
        return False
    return not entry.get("sha256") or sha256_of(path) == entry["sha256"]


def download(entry: dict, target: str) -> None:
    """Fetch to a partial file, verify size and sha256, then move into place (or unpack a zip)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = target + ".partial"
    with urllib.request.urlopen(entry["url"], timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while block := response.read(1 << 20):
            out.write(block)
            done += len(block)
            if total:
                print(f"\r  {done / total:6.1%} of {total / 1e6:.0f} MB", end="", flush=True)
    print()
    if entry["url"].endswith(".zip"):
        with zipfile.ZipFile(partial) as archive:
            archive.extractall(os.path.dirname(target))
        os.remove(partial)
        return
    if not verified(partial, entry):
        os.remove(partial)
        raise ValueError(f"{entry['id']}: downloaded file does not match the manifest's size/sha256")
    os.replace(partial, target)


def install_models(preset: str, models_dir: str, dry_run: bool) -> int:
    manifest = json.load(open(MANIFEST, encoding="utf-8"))
    if preset not in manifest["presets"]:
        print(f"unknown preset {preset!r}; choose from {', '.join(manifest['presets'])}")
        return 2
    by_id = {m["id"]: m for m in manifest["models"]}
    missing = 0
    for model_id in manifest["presets"][preset]["models"]:
        entry = by_id[model_id]
        target = os.path.join(models_dir, entry["folder"], *entry["path"].split("/"))
        if verified(target, entry):
            print(f"ok       {entry['folder']}/{entry['path']}")
            continue
        if dry_run or not entry.get("url"):
            missing += 1
            print(f"missing  {entry['folder']}/{entry['path']}\n         put it at {target}\n"
                  f"         from {entry.get('url') or entry['source']}")
            continue
        print(f"fetching {entry['folder']}/{entry['path']} from {entry['url']}")
        try:
            download(entry, target)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            missing += 1
            print(f"failed   {exc}\n         offline? put the file at {target}\n"
                  f"         from {entry.get('url') or entry['source']}")
    return 1 if missing else 0


def list_models() -> None:
    manifest = json.load(open(MANIFEST, encoding="utf-8"))
    for name, preset in manifest["presets"].items():
        print(f"{name}: {preset['description']}")
        for model_id in preset["models"]:
            print(f"    {model_id}")
    print()
    for m in manifest["models"]:
        size = f"{m['size_bytes'] / 1e6:,.0f} MB" if m.get("size_bytes") else "size n/a"
        print(f"{m['id']:<28} {m['folder']}/{m['path']}  ({size}, {m['license']})")


def models_markdown() -> str:
    """The README's model table (the README embeds exactly this; a test keeps them equal)."""
    manifest = json.load(open(MANIFEST, encoding="utf-8"))
    rows = ["| model | folder / file | size | license | used by | presets |",
            "| --- | --- | --- | --- | --- | --- |"]
    for m in manifest["models"]:
        size = f"{m['size_bytes'] / 1e6:,.0f} MB" if m.get("size_bytes") else "?"
        used_in = ", ".join(p for p, v in manifest["presets"].items() if m["id"] in v["models"])
        rows.append(f"| [{m['id']}]({m['source']}) | `{m['folder']}/{m['path']}` | {size} | "
                    f"{m['license']} | {m['stage']} | {used_in or '-'} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", metavar="PRESET", help="also install a preset's model files")
    parser.add_argument("--models-dir", default=None, help="ComfyUI models folder")
    parser.add_argument("--dry-run", action="store_true", help="print what goes where, fetch nothing")
    parser.add_argument("--no-requirements", action="store_true", help="skip pip")
    parser.add_argument("--list", action="store_true", help="list presets and models")
    parser.add_argument("--markdown", action="store_true", help="print the README's model table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(models_markdown(), end="")
        return 0
    if args.list:
        list_models()
        return 0
    rc = 0 if args.no_requirements or args.dry_run else install_requirements()
    if rc == 0 and args.models:
        rc = install_models(args.models, args.models_dir or default_models_dir(), args.dry_run)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
