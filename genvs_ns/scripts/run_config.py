"""Reading an ns-train ``config.yml`` without letting it run code.

nerfstudio writes the trainer config with ``yaml.dump`` and reads it back with ``yaml.Loader``, which builds any
Python object a tag names: a shared run folder whose ``config.yml`` holds ``!!python/object/apply:os.system [...]``
runs that command when the folder is opened. This loader builds only what such a file legitimately holds:

- ``!!python/object:C``: C a dataclass of genvs-ns or a configuration dataclass (``PrintableConfig``) of nerfstudio,
  filled from plain values;
- ``!!python/name:N``: N a class of nerfstudio, genvs-ns or ``torch.optim`` (the configs' ``_target``), or
  nerfstudio's collate function;
- ``!!python/object/apply:`` of ``pathlib`` paths from strings, and of nerfstudio's / genvs-ns's enums from a value;
- ``!!python/tuple``.

Anything else is refused with one line naming the file and the tag; the modules named are imported only after the
tag is allowed, and only from the installed packages.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pathlib
from pathlib import Path
from typing import Any

import yaml

from genvs_ns.errors import DataError

_PYTHON = "tag:yaml.org,2002:python/"
_CONFIG_MODULES = ("genvs_ns.", "nerfstudio.")
_CLASS_MODULES = (*_CONFIG_MODULES, "torch.optim.")
_FUNCTIONS = {"nerfstudio.data.utils.nerfstudio_collate.nerfstudio_collate"}
_PATHS = {f"pathlib.{name}": getattr(pathlib, name) for name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath")}


class RefusedTag(Exception):
    """A tag that could run code, or names something a config does not hold."""

    def __init__(self, tag: str, why: str) -> None:
        super().__init__(f"{tag}: {why}")
        self.tag, self.why = tag, why


def _resolve(tag: str, name: str, modules: tuple[str, ...]) -> Any:
    module, _, attribute = name.rpartition(".")
    if not module.startswith(modules):
        raise RefusedTag(tag, f"only names from {', '.join(m.rstrip('.') for m in modules)} are read")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        raise RefusedTag(tag, f"{name} does not exist in the installed packages") from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader plus the few Python tags of a trainer config."""


def _tuple(loader: _ConfigLoader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))


def _config_object(loader: _ConfigLoader, suffix: str, node: yaml.Node) -> Any:
    from nerfstudio.configs.base_config import PrintableConfig

    tag = f"!!python/object:{suffix}"
    cls = _resolve(tag, suffix, _CONFIG_MODULES)
    ours = suffix.startswith("genvs_ns.")
    if not (inspect.isclass(cls) and dataclasses.is_dataclass(cls) and (ours or issubclass(cls, PrintableConfig))):
        raise RefusedTag(tag, "not a configuration dataclass")
    if not isinstance(node, yaml.MappingNode):
        raise RefusedTag(tag, "a configuration must be a mapping of its fields")
    state = loader.construct_mapping(node, deep=True)
    instance = cls.__new__(cls)
    if hasattr(instance, "__setstate__"):  # genvs-ns configs fill fields a file written before them lacks
        instance.__setstate__(state)
    else:
        instance.__dict__.update(state)
    return instance


def _apply(loader: _ConfigLoader, suffix: str, node: yaml.Node) -> Any:
    tag = f"!!python/object/apply:{suffix}"
    if not isinstance(node, yaml.SequenceNode):
        raise RefusedTag(tag, "only a list of plain arguments is read")
    args = loader.construct_sequence(node, deep=True)
    if suffix in _PATHS:
        if not all(isinstance(a, str) for a in args):
            raise RefusedTag(tag, "a path is built from strings only")
        return _PATHS[suffix](*args)
    cls = _resolve(tag, suffix, _CONFIG_MODULES)
    if not (inspect.isclass(cls) and issubclass(cls, enum.Enum)) or len(args) != 1:
        raise RefusedTag(tag, "only paths and enum values are built")
    return cls(args[0])


def _name(loader: _ConfigLoader, suffix: str, node: yaml.Node) -> Any:
    tag = f"!!python/name:{suffix}"
    if loader.construct_scalar(node):  # type: ignore[arg-type]
        raise RefusedTag(tag, "a name takes no value")
    obj = _resolve(tag, suffix, _CLASS_MODULES)
    if not inspect.isclass(obj) and suffix not in _FUNCTIONS:
        raise RefusedTag(tag, "only classes are read by name")
    return obj


def _refuse(loader: _ConfigLoader, suffix: str, node: yaml.Node) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise RefusedTag(tag, "could run code" if tag.startswith("!!python/") else "not a tag a trainer config holds")


_ConfigLoader.add_constructor(f"{_PYTHON}tuple", _tuple)
_ConfigLoader.add_multi_constructor(f"{_PYTHON}object:", _config_object)
_ConfigLoader.add_multi_constructor(f"{_PYTHON}object/apply:", _apply)
_ConfigLoader.add_multi_constructor(f"{_PYTHON}name:", _name)
_ConfigLoader.add_multi_constructor(_PYTHON, _refuse)  # object/new:, module:, and the rest
_ConfigLoader.add_multi_constructor("!", _refuse)  # local tags: nothing here uses them


def read_config(config_path: Path) -> Any:
    """The ``TrainerConfig`` of an ns-train ``config.yml``, built without running anything the file names."""
    from nerfstudio.engine.trainer import TrainerConfig

    config_path = Path(config_path)
    try:
        config = yaml.load(config_path.read_text(), Loader=_ConfigLoader)  # noqa: S506 - the loader is the safe one
    except RefusedTag as exc:
        raise DataError(config_path, f"refused {exc.tag}: {exc.why}") from None
    except yaml.constructor.ConstructorError as exc:
        tag = str(exc.problem).rpartition("tag ")[2].replace("tag:yaml.org,2002:", "!!")
        raise DataError(config_path, f"refused {tag}: not a tag a trainer config holds") from None
    except yaml.YAMLError as exc:
        raise DataError(config_path, f"not readable YAML ({type(exc).__name__})") from None
    if not isinstance(config, TrainerConfig):
        raise DataError(config_path, "not a trainer config written by ns-train")
    return config
