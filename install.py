"""Install SpinBot's requirements into the Python that runs this script, and optionally its models.

    python install.py                         # requirements (what ComfyUI-Manager runs)
    python install.py --models direct         # + the models of a preset, downloaded and verified
    python install.py --models direct --dry-run   # only say what goes where
    python install.py --list                  # presets and models

Every download is verified against the manifest's size and sha256 (where the source publishes
them) before it is put in place; zips (insightface packs) are verified as downloaded, checked for
unsafe member paths, and unpacked into the pack's folder (flat or with one top-level folder).
A failed download leaves nothing behind.

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
import shutil
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


def target_of(models_dir: str, entry: dict) -> str:
    """Where an entry lives: ``<models_dir>/<folder>/<path>`` (a file, or a folder for packs)."""
    return os.path.join(models_dir, entry["folder"], *entry["path"].split("/"))


def is_archive(entry: dict) -> bool:
    """An entry whose download is a zip that unpacks into the entry's folder (insightface packs)."""
    return (entry.get("url") or "").lower().split("?")[0].endswith(".zip")


def verified(path: str, entry: dict) -> bool:
    """True when the model is in place: a folder entry holds every file of its ``contains``
    list (any file at all when the list is empty); a file entry has the manifest's size and
    sha256 where the manifest gives them."""
    if not os.path.exists(path):
        return False
    if os.path.isdir(path):
        needed = entry.get("contains") or []
        if needed:
            return all(os.path.isfile(os.path.join(path, *n.split("/"))) for n in needed)
        return any(files for _d, _s, files in os.walk(path))
    return not mismatch(path, entry)


def problem(path: str, entry: dict) -> str | None:
    """What is wrong with the model at ``path``: None when it is in place (`verified`), "missing"
    when nothing is there, else a "present but ..." phrase (wrong size or sha256 with the found
    and expected values, a file where a folder belongs or the reverse, files a pack lacks)."""
    if not os.path.exists(path):
        return "missing"
    folder_entry = is_archive(entry) or bool(entry.get("contains"))
    if os.path.isdir(path):
        # A folder entry without url or contents list (whisper) is known only by being a folder.
        if not folder_entry and (entry.get("url") or entry.get("size_bytes") or entry.get("sha256")):
            return "present but a folder, where the model file belongs"
        lacking = [n for n in entry.get("contains") or []
                   if not os.path.isfile(os.path.join(path, *n.split("/")))]
        if lacking:
            return f"present but incomplete (lacks {', '.join(lacking)})"
        return None if verified(path, entry) else "present but empty"
    if folder_entry:
        return "present but a file, where a folder of model files belongs"
    wrong = mismatch(path, entry)
    return f"present but {wrong}" if wrong else None


def mismatch(path: str, entry: dict) -> str | None:
    """Why the file at ``path`` is not the one the manifest describes (size first, it is cheap),
    or None when it matches (or the manifest gives neither size nor sha256)."""
    size = os.path.getsize(path)
    if entry.get("size_bytes") and size != entry["size_bytes"]:
        return f"wrong size (got {size} bytes, expected {entry['size_bytes']})"
    if entry.get("sha256"):
        digest = sha256_of(path)
        if digest != entry["sha256"].lower():
            return f"wrong sha256 (got {digest}, expected {entry['sha256'].lower()})"
    return None


def archive_members(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """The files of a zip with their paths (as parts) inside the pack folder.

    Flat zips (the official ``buffalo_l.zip``) keep their paths; a zip whose every entry sits in
    one top-level folder (``buffalo_l/...``, as packs re-zipped by hand are) has that folder
    dropped, so both land in the same place. Raises ValueError for an absolute path, a drive
    letter or a ``..`` part anywhere (zip-slip): such an archive is refused whole, not cleaned.
    """
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"unsafe path in zip: {info.filename!r}")
        if not info.is_dir() and parts:
            files.append((info, parts))
    if not files:
        raise ValueError("the zip holds no files")
    tops = {parts[0] for _i, parts in files}
    if len(tops) == 1 and all(len(parts) > 1 for _i, parts in files):
        files = [(info, parts[1:]) for info, parts in files]
    return files


def unpack(zip_path: str, target: str, entry: dict) -> None:
    """Unpack a verified zip into the folder ``target``: into a scratch folder beside it first,
    then file by file into place once every member is known to be safe and the files the entry
    ``contains`` are there, so a bad archive leaves nothing in the models folder."""
    scratch = tempfile.mkdtemp(prefix=".unpacking-", dir=os.path.dirname(target))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = archive_members(archive)
                for info, parts in members:
                    dest = os.path.join(scratch, *parts)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with archive.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"not a valid zip: {exc}") from None
        names = {"/".join(parts) for _i, parts in members}
        missing = [n for n in entry.get("contains") or [] if n not in names]
        if missing:
            raise ValueError(f"the zip does not contain {', '.join(missing)} "
                             f"(it holds {', '.join(sorted(names)[:8])})")
        for _info, parts in members:
            dest = os.path.join(target, *parts)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(os.path.join(scratch, *parts), dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _make_parents(path: str) -> str | None:
    """Create the folders above ``path``; return the topmost one created (None if all existed)."""
    top, parent = None, os.path.dirname(path)
    while parent and not os.path.exists(parent):
        top, parent = parent, os.path.dirname(parent)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return top


def download(entry: dict, target: str) -> None:
    """Fetch to a partial file beside the target, verify its size and sha256 (a zip is verified
    as downloaded, before it is opened), then move it into place or unpack it into the target
    folder. On any failure the partial file, the unpacked files and the folders this call
    created are removed, and the error (ValueError, OSError, urllib's URLError) is raised."""
    created = _make_parents(target)
    partial = target + (".zip" if is_archive(entry) else "") + ".partial"
    try:
        with urllib.request.urlopen(entry["url"], timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if total:
                    print(f"\r  {done / total:6.1%} of {total / 1e6:.0f} MB", end="", flush=True)
        print()
        problem = mismatch(partial, entry)
        if problem:
            raise ValueError(f"{entry['id']}: the download does not match the manifest: {problem}")
        if is_archive(entry):
            os.makedirs(target, exist_ok=True)
            unpack(partial, target, entry)
        else:
            os.replace(partial, target)
    except BaseException:
        if created:
            shutil.rmtree(created, ignore_errors=True)
        elif is_archive(entry) and os.path.isdir(target) and not any(os.scandir(target)):
            os.rmdir(target)
        raise
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def preset_error(preset: str) -> str | None:
    """Why ``preset`` cannot be installed (not in the manifest, with the choices), or None."""
    presets = json.load(open(MANIFEST, encoding="utf-8"))["presets"]
    if preset in presets:
        return None
    return f"unknown preset {preset!r}; choose from {', '.join(presets)}"


def models_dir_error(models_dir: str) -> str | None:
    """Why models cannot go under ``models_dir`` at all, or None: it (or the nearest existing
    folder above it) is a file. Said once, before any model, rather than as one ``Not a
    directory`` error per model."""
    path = os.path.abspath(models_dir)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if os.path.isdir(path):
        return None
    what = "is a file" if path == os.path.abspath(models_dir) else f"is inside {path}, which is a file"
    return f"--models-dir {models_dir} {what}, not a folder; give ComfyUI's models folder"


def install_models(preset: str, models_dir: str, dry_run: bool) -> int:
    """Check (``dry_run``) or fetch and verify each model of ``preset`` under ``models_dir``,
    printing one status per model (ok / missing / wrong / fetching / replacing / failed) and what
    to do. Returns 0 when every model is in place, 1 when some are not, 2 for an unknown preset
    or a models folder that cannot be one (`models_dir_error`), checked before any model."""
    manifest = json.load(open(MANIFEST, encoding="utf-8"))
    for error in (preset_error(preset), models_dir_error(models_dir)):
        if error:
            print(f"error: {error}")
            return 2
    by_id = {m["id"]: m for m in manifest["models"]}
    rerun = f"python install.py --models {preset} --models-dir {models_dir}"
    missing = 0
    for model_id in manifest["presets"][preset]["models"]:
        entry = by_id[model_id]
        target = target_of(models_dir, entry)
        name = f"{entry['folder']}/{entry['path']}"
        state = problem(target, entry)
        if state is None:
            print(f"ok       {name}")
            continue
        origin = entry.get("url") or entry["source"]
        if state == "missing":
            where = (f"unzip it into {target} (it must hold "
                     f"{', '.join(entry.get('contains') or ['files'])})" if is_archive(entry)
                     else f"put it at {target}")
        else:
            # A wrong file stays until replaced: say so, not "missing ... put it at" the same path.
            where = (f"{target} is {state}: delete it and download it again"
                     + (f", or run: {rerun} (it replaces it)" if entry.get("url") else ""))
        # A folder where a file belongs (or the reverse) may hold the user's own files: never
        # replaced by a download, only reported.
        misplaced = state.startswith(("present but a file", "present but a folder"))
        if dry_run or not entry.get("url") or misplaced:
            missing += 1
            label = "missing " if state == "missing" else "wrong   "
            print(f"{label} {name}\n         {where}\n         from {origin}")
            continue
        verb = "fetching" if state == "missing" else "replacing"
        print(f"{verb} {name} from {entry['url']}"
              + ("" if state == "missing" else f"\n         ({target} is {state})"))
        try:
            download(entry, target)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            missing += 1
            print(f"failed   {exc}\n         offline? {where}\n         from {origin}")
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
    rows = ["| model | folder / file | size | sha256 | license | used by | presets |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in manifest["models"]:
        size = f"{m['size_bytes'] / 1e6:,.0f} MB" if m.get("size_bytes") else "?"
        if is_archive(m) and m.get("size_bytes"):
            size += " (zip)"
        digest = f"`{m['sha256'][:12]}…`" if m.get("sha256") else "-"
        used_in = ", ".join(p for p, v in manifest["presets"].items() if m["id"] in v["models"])
        rows.append(f"| [{m['id']}]({m['source']}) | `{m['folder']}/{m['path']}` | {size} | {digest} | "
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
    # Mistakes in the command line are reported before pip installs anything.
    if args.models:
        models_dir = args.models_dir or default_models_dir()
        for error in (preset_error(args.models), models_dir_error(models_dir)):
            if error:
                print(f"error: {error}")
                return 2
    rc = 0 if args.no_requirements or args.dry_run else install_requirements()
    if rc == 0 and args.models:
        rc = install_models(args.models, args.models_dir or default_models_dir(), args.dry_run)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
