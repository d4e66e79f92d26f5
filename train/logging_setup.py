"""What `python -m train` and `python -m train.evaluate` write while they run: records of the `train` logger on
stderr (INFO by default, WARNING with --quiet; under torchrun only rank 0's), and progress bars (ours and those of
transformers, datasets and huggingface_hub) only where stderr is a terminal and INFO is logged, so a redirected log
holds no bar redraws or escape codes."""

import logging
import sys

LOGGER_NAME = "train"
LOG_LEVELS = ("debug", "info", "warning", "error")


def add_logging_flags(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                       help="least severe log records shown on stderr (under torchrun: rank 0's; the other ranks "
                            "show errors only)")
    group.add_argument("--quiet", dest="log_level", action="store_const", const="warning", default="info",
                       help="show warnings and errors only, and no progress bars: the same as --log-level warning "
                            "(off by default)")


class _TqdmStderrHandler(logging.Handler):
    """Writes each record to the current sys.stderr through tqdm.write, so an open progress bar is redrawn below it
    instead of being cut through."""

    def emit(self, record):
        try:
            from tqdm.auto import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging(level="info", rank=0):
    """Route the `train` logger to stderr at `level` on rank 0, at ERROR on the other ranks; on those, transformers
    is set to errors only too, so its warnings (the load report of a model's newly initialised head, for one) show
    once per run, not once per process. Calling it again replaces the earlier setup."""
    if level not in LOG_LEVELS:
        raise ValueError(f"level must be one of {LOG_LEVELS}, got {level!r}")
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _TqdmStderrHandler)]:
        logger.removeHandler(handler)
    handler = _TqdmStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()) if rank == 0 else logging.ERROR)
    logger.propagate = False  # one copy on stderr, whatever the root logger does
    import transformers
    if rank != 0:
        transformers.logging.set_verbosity_error()
    if not show_progress_bars():
        transformers.logging.disable_progress_bar()  # its "Loading weights" bar
    return logger


def hide_hub_progress_bars():
    """Turn off the download bars of datasets and huggingface_hub where no bars should go out (called by the hub
    loaders only: importing datasets takes a while)."""
    if show_progress_bars():
        return
    import datasets
    import huggingface_hub
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


def show_progress_bars():
    """Whether tqdm bars go out: stderr is a terminal and the `train` logger shows INFO."""
    return sys.stderr.isatty() and logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO)
