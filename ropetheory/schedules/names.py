"""Schedule names in one place: the canonical registry names, every alias, display names and colours.

Every spelling a study, a data file or a user writes for a schedule resolves here, and only here
(``canonical``); figures look up a schedule's colour and display name by its canonical name
(``ropetheory.figstyle.color``). A *label* is what a study calls one of its series: a canonical name,
an alias, or a canonical name with a variant that changes the schedule only at inference (``+temp``:
RoPE-ID's length temperature; ``rope+pi`` / ``rope+yarn``: a RoPE model read with PI or YaRN
frequencies) or with a parameter in its label (``rope_5e5``: RoPE of base 5e5).

Pure Python: imports nothing, so figure styling and the command line can read it cheaply.
"""
from __future__ import annotations
from ..core.errors import BadValue, BadType

__all__ = ["PAPER", "NOPE", "EXPLICIT", "HF_TYPES", "CANONICAL", "ALIASES", "VARIANT_COLORS", "COLORS",
           "DISPLAY", "VARIANTS", "canonical", "normalise", "display_name", "label_schedule", "spec_of"]

#: the paper's schedules (``ropetheory.schedules``)
PAPER = ("rope", "partial", "high_frequency", "rope_id")
#: the schedule without rotation (every theta_j = 0)
NOPE = "nope"
#: an explicit frequency vector
EXPLICIT = "theta"
#: Hugging Face rope types other than ``default`` (which is ``rope``), as transformers' ROPE_INIT_FUNCTIONS
HF_TYPES = ("linear", "dynamic", "yarn", "longrope", "llama3", "proportional")
#: every canonical name the registry holds
CANONICAL = PAPER + (NOPE, EXPLICIT) + HF_TYPES

#: every other spelling of a canonical name (lower case, ``-`` and spaces written ``_``)
ALIASES = {
    "default": "rope", "rope_1e4": "rope",
    "half": "partial", "half_rope": "partial",
    "hf": "high_frequency", "high_freq": "high_frequency", "high_freq_rope": "high_frequency",
    "unrope": "rope_id",
    "none": "nope", "no_rope": "nope", "without_rope": "nope",
    "pi": "linear", "rope+pi": "linear",
    "ntk": "dynamic",
    "rope+yarn": "yarn",
}

#: labels that are a schedule plus an inference-time variant or a named parameter -> that schedule
VARIANTS = {"rope_id+temp": "rope_id", "rope_5e5": "rope"}
#: colours of labels that are a schedule plus an inference-time variant or a named parameter: each is a
#: series of its own beside its schedule, so it has a colour of its own
VARIANT_COLORS = {"rope_id+temp": "darkred", "rope_5e5": "tab:purple"}
#: one colour per canonical schedule, used by every figure
COLORS = {
    "rope": "tab:blue", "partial": "tab:green", "high_frequency": "tab:orange", "rope_id": "tab:red",
    "nope": "tab:gray", "linear": "tab:brown", "dynamic": "tab:pink", "yarn": "tab:olive", "llama3": "tab:cyan",
    "longrope": "navy", "proportional": "teal", "theta": "black",
}
#: how figures and tables name each canonical schedule
DISPLAY = {
    "rope": "RoPE", "partial": "half-RoPE", "high_frequency": "high-frequency RoPE", "rope_id": "RoPE-ID",
    "nope": "NoPE", "theta": "explicit theta", "linear": "PI (linear)", "dynamic": "dynamic NTK",
    "yarn": "YaRN", "longrope": "LongRoPE", "llama3": "Llama 3", "proportional": "proportional",
    "rope_id+temp": "RoPE-ID + temperature", "rope_5e5": "RoPE (base 5e5)",
}
#: variant spellings: label -> the normalised label
_VARIANT_SPELLINGS = {"rope_id_temp": "rope_id+temp"}


def normalise(label: str) -> str:
    """A label in lower case with ``-`` and spaces written ``_``, variant spellings unified."""
    key = str(label).strip().lower().replace("-", "_").replace(" ", "_")
    return _VARIANT_SPELLINGS.get(key, key)


def canonical(name: str) -> str:
    """The canonical registry name of a schedule name or alias; a ValueError naming it otherwise."""
    if not isinstance(name, str):
        raise BadType(f"schedule name must be a string, got {name!r}")
    key = normalise(name)
    key = ALIASES.get(key, key)
    if key not in CANONICAL:
        raise BadValue(f"unknown schedule {name!r}; known schedules: {sorted(CANONICAL)} "
                         f"(aliases: {sorted(ALIASES)})")
    return key


def display_name(label: str) -> str:
    """How figures and tables name a schedule label (its own name where none is registered)."""
    key = normalise(label)
    if key in DISPLAY:
        return DISPLAY[key]
    key = ALIASES.get(key, key)
    return DISPLAY.get(key, str(label))


def label_schedule(label: str) -> str:
    """The canonical schedule behind a study's series label: an alias or canonical name resolves through
    ``canonical``, a variant label (``VARIANTS``: ``rope_id+temp``, ``rope_5e5``) to the schedule it
    varies; a ValueError naming the label otherwise."""
    if not isinstance(label, str):
        raise BadType(f"schedule label must be a string, got {label!r}")
    return VARIANTS.get(normalise(label)) or canonical(label)


def spec_of(label: str, **params: object) -> dict[str, object]:
    """The registry spec of a study's series: ``{"name": label_schedule(label), **params}``; the label
    stays the study's name for the series (the files it writes carry it)."""
    return {"name": label_schedule(label), **params}
