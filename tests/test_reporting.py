"""tl_hub.reporting: one way of reporting. Progress lines are INFO records of the `tl_hub` logger; with no
logging set up they reach the console (stdout; warnings to stderr), TL_HUB_VERBOSITY chooses the level, a
program's own logging setup receives them once, and only the main process of a run reports."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = (
    "import logging, sys\n"
    "if 'configured' in sys.argv: logging.basicConfig(level=logging.INFO, format='ROOT %(message)s', stream=sys.stdout)\n"
    "from tl_hub.reporting import use_console\n"
    "use_console(); use_console()  # twice: still one handler\n"
    "logging.getLogger('tl_hub.hub').info('progress line')\n"
    "logging.getLogger('tl_hub').warning('a warning')\n"
)


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TL_HUB_VERBOSITY"}
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120,
                          env={**environ, **env}, check=True)


def test_console_shows_info_on_stdout_and_warnings_on_stderr_once():
    proc = run()
    assert proc.stdout == "progress line\n"
    assert proc.stderr == "a warning\n"


def test_verbosity_from_the_environment():
    proc = run(TL_HUB_VERBOSITY="warning")
    assert proc.stdout == "" and proc.stderr == "a warning\n"


def test_a_program_that_configured_logging_gets_each_line_once_in_its_own_format():
    proc = run("configured")
    assert proc.stdout == "ROOT progress line\nROOT a warning\n" and proc.stderr == ""


def test_only_the_main_process_reports():
    from tl_hub.reporting import logger, main_process_reporter

    class Process:
        def __init__(self, main: bool) -> None:
            self.is_main_process = main

    assert main_process_reporter(Process(True)) == logger.info
    assert main_process_reporter(Process(False))("ignored") is None
