"""The ``tokalign`` console script: a click group and its error policy.

A command builds a config and calls one library function.  Problems the user
can fix (``TokalignError``, bad option values) print one line and exit with
status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from tokalign.align.errors import TokalignError
from tokalign.align.formats.atomic import as_os_error
from tokalign.cli.os_errors import describe_os_error

from tokalign.cli.corpus_check_cmd import corpus
from tokalign.cli.corpus_cmd import demo_corpus
from tokalign.cli.experiment_cmd import experiment
from tokalign.cli.fit_cmd import fit
from tokalign.cli.generator_cmd import generator
from tokalign.cli.generator_sample_cmd import sample as generator_sample
from tokalign.cli.generator_probe_cmd import probe as generator_probe
from tokalign.cli.probe_cmds import export, neighbors
from tokalign.cli.report_cmd import report
from tokalign.cli.tokenize_cmd import decode, tokenize


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """tokalign: align VQ image tokens with a frozen language model's token embeddings."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="tokalign: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("accelerate", "transformers", "faiss", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


cli.add_command(fit)
cli.add_command(demo_corpus)
cli.add_command(tokenize)
cli.add_command(decode)
cli.add_command(neighbors)
cli.add_command(export)
cli.add_command(report)
cli.add_command(corpus)
generator.add_command(generator_sample)
generator.add_command(generator_probe)
cli.add_command(generator)
cli.add_command(experiment)


def _wrapper_types() -> tuple[type, ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        return ()
    return (SafetensorError,)


_WRAPPERS = _wrapper_types()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning user errors into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="tokalign", standalone_mode=False)
    except TokalignError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a read-only folder...: one line, exit 2 (writes are atomic)
        click.echo(f"error: {describe_os_error(exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # bare `tokalign`: the help
            exc.show()
        else:  # one line, like TokalignError
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        wrapped = as_os_error(exc, "")  # safetensors and DataLoader workers wrap I/O errors in their own types
        if wrapped is None or not isinstance(exc, _WRAPPERS):
            raise
        click.echo(f"error: {describe_os_error(wrapped)}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
