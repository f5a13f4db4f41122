"""What every command shares: its run context (the --threads option, a progress bar on a terminal)."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from .run import ENV, RunContext

THREADS_HELP = (f"threads to use, at most the cores this process may use (default: ${ENV}, else all of them; "
                "keys are spread over threads of one torch thread each)")


def add_threads_option(parser) -> None:
    parser.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)


def progress_bar(desc: str):
    """(update(done, total, phase), close) of a tqdm bar on stderr when it is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a missing bar must not stop a merge
        return None, lambda: None
    bar = tqdm(total=0, desc=desc, unit="key", leave=False, disable=not sys.stderr.isatty())

    def update(done, total, phase):
        if bar.total != total:
            bar.reset(total=total)
        bar.set_description(phase)
        bar.n = done
        bar.refresh()
    return update, bar.close


@contextmanager
def command_run(desc: str, threads=None, quiet: bool = False):
    """The run context of a command: threads from --threads (or the environment), a progress bar unless
    `quiet`; the bar is closed afterwards."""
    update, close = progress_bar(desc) if not quiet else (None, lambda: None)
    try:
        yield RunContext.command(threads, progress=update)
    finally:
        close()
