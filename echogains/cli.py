"""The ``echogains`` command (python-fire): each command is a library function, shown with its own docstring.

Run ``echogains --help`` or ``echogains COMMAND --help``. Bad input ends with a one-line error naming the file and
the problem, and exit status 2.

A command's options, defaults and help are those of the library function it runs (:func:`command` reads its
signature and Google-style docstring), so they cannot drift apart. What the command line needs beyond the function is
declared per command: option names that differ (``--out`` for ``out_dir``), keyword arguments that are not options
(objects such as ``policy``), options that build such an object (``--depth_mode``), what is printed at the end. The
library module is imported when its command is used (importing all of them costs seconds; one command's, under one).
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echogains.locate import nnunet_trainer_dir
from echogains.utils import EchoDataError, get_logger, set_progress

log = get_logger("echogains.cli")

Function = Callable[..., Any]
_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
#: Older names of the progress switch; the command line calls it ``--progress`` whatever the function says.
_PROGRESS_ALIASES = ("show_progress", "verbose")
_ARG_ENTRY = re.compile(r"^    (\*{0,2}\w+):\s?(.*)$")


def arg_docs(doc: str | None) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section: name -> text (continuation lines joined by spaces)."""
    entries: dict[str, str] = {}
    name = None
    in_args = False
    for line in inspect.cleandoc(doc or "").splitlines():
        if line.strip() == "Args:":
            in_args = True
        elif in_args and line and not line.startswith(" "):
            break  # the next section
        elif in_args and (match := _ARG_ENTRY.match(line)):
            name = match[1].lstrip("*")
            entries[name] = match[2]
        elif in_args and name and line.strip():
            entries[name] += " " + line.strip()
    return entries


def rewrite_doc(doc: str | None, rename: Mapping[str, str], hide: Sequence[str], extra: Mapping[str, str]) -> str:
    """The function's docstring as the command's: options renamed, hidden arguments' entries dropped, ``extra``
    entries added at the end of ``Args:``, each entry on one line (fire's parser would take a continuation line with
    a colon, ``(EchoNet-Dynamic: AVI ...``, for a new argument)."""
    entries = {rename.get(name, name): text for name, text in arg_docs(doc).items() if name not in hide}
    entries.update(extra)
    out: list[str] = []
    in_args = False
    for line in inspect.cleandoc(doc or "").splitlines():
        if line.strip() == "Args:":
            in_args = True
            out.append(line)
            out.extend(f"    {name}: {text}" for name, text in entries.items())
            continue
        if in_args:
            if line.strip() and line.startswith(" "):
                continue  # an entry (or its continuation), written above
            in_args = False  # a blank line or the next section
        out.append(line)
    text = "\n".join(out)
    for old, new in rename.items():
        text = re.sub(rf"``{old}\b", f"``{new}", text)
    return text


def _cli_annotation(annotation: Any) -> Any:
    """Path arguments take a string on the command line: ``str | os.PathLike`` is shown as ``str``."""
    return annotation.replace(" | os.PathLike", "") if isinstance(annotation, str) else annotation


@dataclass(frozen=True)
class Option:
    """A command-line option that the library function does not have (it is turned into an argument by ``adapt``)."""

    name: str
    default: Any
    doc: str
    annotation: Any = inspect.Parameter.empty
    #: a hidden function argument whose place the option takes (else it goes before ``--progress``)
    at: str | None = None


def borrowed(owner: Function, *names: str) -> list[Option]:
    """Options with the defaults and docs of ``owner``'s arguments (e.g. the fields of a dataclass)."""
    params, docs = inspect.signature(owner).parameters, arg_docs(owner.__doc__)
    return [Option(name, params[name].default, docs[name], params[name].annotation) for name in names]


def _printed(value: Any, _: dict[str, Any]) -> str:
    return str(value)  # fire would show the help of an object it cannot print (a Path)


@dataclass
class Command:
    """How one library function becomes one command. ``loader`` imports and returns the function.

    Args:
        rename: function argument -> option name (the progress switch is always ``--progress``).
        hide: keyword arguments that are not options (they keep the function's default).
        options: extra options, added before ``--progress``; ``adapt`` must turn them into function arguments.
        adapt: values by option name -> keyword arguments by function name (after renaming), e.g. building an object.
        result: turns the function's return value (and the option values) into what the command prints.
        sets_progress: also switch the package's progress bars (:func:`echogains.utils.set_progress`).
    """

    loader: Callable[[], Function]
    rename: Mapping[str, str] = field(default_factory=dict)
    hide: Sequence[str] = ()
    options: Callable[[], list[Option]] = list
    adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    result: Callable[[Any, dict[str, Any]], Any] = _printed
    sets_progress: bool = True
    _built: Function | None = field(default=None, init=False, repr=False)

    def build(self) -> Function:
        """The command: the function's signature and docstring, adapted as declared."""
        func = self.loader()
        params = inspect.signature(func).parameters
        rename = dict(self.rename)
        rename.update(
            {alias: "progress" for alias in _PROGRESS_ALIASES if alias in params and "progress" not in params}
        )
        hide = set(self.hide)
        options = self.options()
        option_params = {
            o.name: inspect.Parameter(o.name, _POSITIONAL, default=o.default, annotation=o.annotation) for o in options
        }
        placed = {o.at: option_params.pop(o.name) for o in options if o.at is not None}
        cli_params = []
        for p in params.values():
            if p.name in placed:
                cli_params.append(placed[p.name])
            elif p.name not in hide and p.kind is not _VAR_KEYWORD:
                cli_params.append(
                    p.replace(
                        name=rename.get(p.name, p.name), kind=_POSITIONAL, annotation=_cli_annotation(p.annotation)
                    )
                )
        cli_params += option_params.values()
        cli_params.sort(key=lambda p: p.name == "progress")  # stable: the progress switch last, as it always was
        cli_params += [p for p in params.values() if p.kind is _VAR_KEYWORD]
        signature = inspect.Signature(cli_params, return_annotation=str)
        back = {new: old for old, new in rename.items()}
        var_keyword = next((p.name for p in params.values() if p.kind is _VAR_KEYWORD), None)

        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            if self.sets_progress:
                set_progress(values["progress"])
            extra = values.pop(var_keyword, {}) if var_keyword else {}
            arguments = self.adapt(dict(values)) if self.adapt else dict(values)
            library = self.loader()  # looked up at each call (cheap once imported; a test may have patched it)
            return self.result(
                library(**{back.get(name, name): value for name, value in arguments.items()}, **extra), values
            )

        run.__name__ = run.__qualname__ = func.__name__
        run.__doc__ = rewrite_doc(func.__doc__, rename, sorted(hide), {o.name: o.doc for o in options})
        run.__signature__ = signature  # type: ignore[attr-defined]  # read by inspect.signature and so by fire
        return run

    def __get__(self, obj: object, owner: type | None = None) -> Function:
        """The command (built on first access: that imports the library module)."""
        if self._built is None:
            self._built = self.build()
        return self._built


# --- per-command adaptations ----------------------------------------------------------------------------------------
def _report_html(_: Any, values: dict[str, Any]) -> str:
    return str(Path(values["out"]) / "report.html")


def _joined_labels(values: dict[str, Any]) -> dict[str, Any]:
    if isinstance(values["labels"], (tuple, list)):  # fire turns --labels LV,MYO into a tuple
        values["labels"] = ",".join(str(x) for x in values["labels"])
    return values


def _verify_result(report: Any, _: dict[str, Any]) -> str:
    """Print the report; exit status 1 when any error was found."""
    print(report.summary())
    if not report.ok:
        raise SystemExit(1)
    return "OK"


def _expand_options() -> list[Option]:
    from echogains.augment.expand import expand_dataset
    from echogains.augment.transforms import TransformPolicy

    repaint = arg_docs(expand_dataset.__doc__)["repaint"]
    return [
        Option("no_repaint", False, f"the opposite of ``repaint`` ({repaint})", "bool", at="repaint"),
        *borrowed(TransformPolicy, "depth_mode", "kept_region"),
    ]


def _expand_arguments(values: dict[str, Any]) -> dict[str, Any]:
    from echogains.augment.transforms import TransformPolicy

    values["repaint"] = not values.pop("no_repaint")
    values["policy"] = TransformPolicy(depth_mode=values.pop("depth_mode"), kept_region=values.pop("kept_region"))
    return values


# --- the library functions, imported on first use ------------------------------------------------------------------
def _make_phantom() -> Function:
    from echogains.data.phantom import make_phantom

    return make_phantom


def _convert_camus() -> Function:
    from echogains.data.camus import convert_camus

    return convert_camus


def _convert_echonet() -> Function:
    from echogains.data.echonet import convert_echonet

    return convert_echonet


def _verify_dataset() -> Function:
    from echogains.data.verify import verify_dataset

    return verify_dataset


def _evaluate() -> Function:
    from echogains.evaluation.evaluate import evaluate

    return evaluate


def _train_ddpm() -> Function:
    from echogains.ddpm.train import train_ddpm

    return train_ddpm


def _expand_dataset() -> Function:
    from echogains.augment.expand import expand_dataset

    return expand_dataset


def _augmentation_report() -> Function:
    from echogains.augment.quality import augmentation_report

    return augmentation_report


def _analyze() -> Function:
    from echogains.analysis import analyze

    return analyze


class EchoGains:
    """Echocardiography LV segmentation toolkit: data, augmentation, evaluation."""

    make_phantom = Command(_make_phantom, rename={"out_dir": "out"})
    convert_camus = Command(_convert_camus)
    convert_echonet = Command(_convert_echonet)
    verify_dataset = Command(_verify_dataset, rename={"root": "dataset"}, result=_verify_result, sets_progress=False)
    evaluate = Command(
        _evaluate,
        rename={"pred_dir": "pred", "dataset_dir": "dataset", "out_dir": "out"},
        hide=("fold",),
        adapt=_joined_labels,
        result=_report_html,
    )
    train_ddpm = Command(_train_ddpm, rename={"out_dir": "out"}, hide=("frame_step", "n_samples", "sample_steps"))
    expand_dataset = Command(
        _expand_dataset,
        hide=("repaint", "frame_size", "border", "policy"),
        options=_expand_options,
        adapt=_expand_arguments,
    )
    augmentation_report = Command(_augmentation_report, hide=("sample_steps", "max_training", "top"))
    analyze = Command(_analyze, hide=("segmenter",), result=_report_html)

    @staticmethod
    def nnunet_env(shell: str = "bash") -> str:
        """Print the line that makes nnU-Net find this project's trainers (``-tr nnUNetTrainerEcho``).

        Args:
            shell: ``bash`` (also zsh/sh) or ``fish``.
        """
        trainers = nnunet_trainer_dir()  # located, not imported: echogains does not depend on the plugin
        if shell == "fish":
            return f"set -gx nnUNet_extTrainer {trainers}"
        if shell not in ("bash", "zsh", "sh"):
            raise EchoDataError(None, f"--shell: unknown shell {shell!r}; use bash, zsh, sh or fish")
        return f"export nnUNet_extTrainer={trainers}"


#: python-fire's own flags (after a ``--`` separator, or alone).
_FIRE_FLAGS = {"help", "h", "interactive", "i", "trace", "t", "verbose", "v", "completion", "separator"}


def check_flags(argv: Sequence[str]) -> None:
    """Refuse an option the command does not have, before the command runs.

    python-fire calls the command first and complains about arguments it could not consume only afterwards, so a
    misspelt option (``--smapler repaint``) would run a whole expansion with the default. Options are matched against
    the command's signature (``--flag``, ``--flag=value``, ``--noflag`` for booleans, dashes or underscores).
    """
    tokens = list(argv)
    positional = [i for i, tok in enumerate(tokens) if not tok.startswith("-")]
    if not positional:
        return
    command = tokens[positional[0]]
    method = getattr(EchoGains, command.replace("-", "_"), None)
    if method is None or command.startswith("_"):
        return  # fire reports the unknown command itself
    params = inspect.signature(method).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the command checks its own extra options (make-phantom's parameter overrides)
    names = {name for name in params if name != "self"}
    for tok in tokens[positional[0] + 1 :]:
        if tok == "--":
            break
        if not tok.startswith("--"):
            continue
        name = tok[2:].split("=", 1)[0].replace("-", "_")
        if name in names or name in _FIRE_FLAGS or (name.startswith("no") and name[2:] in names):
            continue
        raise EchoDataError(None, f"{command}: unknown option --{name}; see echogains {command} --help")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    import fire

    try:
        check_flags(sys.argv[1:] if argv is None else argv)
        fire.Fire(EchoGains(), command=argv, name="echogains")
    except EchoDataError as err:
        logging.getLogger("echogains").debug("error", exc_info=True)
        print(f"echogains: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
