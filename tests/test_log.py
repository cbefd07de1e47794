"""rpfs.log: a command that logs nothing never loads ``logging``; one that logs gets the
command line's settings (format, level) however ``logging`` came to be loaded. Each case
runs in a fresh interpreter (pytest has loaded logging here)."""

from __future__ import annotations

import subprocess
import sys

SETTINGS = 'rpfs.log.configure(level="INFO", format="rpfs: %(levelname)s: %(message)s")\n'


def run(code: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", "import sys\nimport rpfs.log\n" + code],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def test_nothing_logged_nothing_loaded_then_the_first_message_is_formatted():
    r = run(SETTINGS + """
log = rpfs.log.get_logger("rpfs.x")
assert "logging" not in sys.modules
log.info("one %s", "thing")
assert "logging" in sys.modules
log.debug("not at INFO")
""")
    assert r.stderr == "rpfs: INFO: one thing\n"


def test_settings_apply_when_logging_was_loaded_before_or_is_loaded_elsewhere():
    before = run("import logging\n" + SETTINGS + 'logging.getLogger("other").info("a")\n')
    assert before.stderr == "rpfs: INFO: a\n"
    # a library that logs through logging itself (boto3, uvicorn): the command calls load()
    after = run(SETTINGS + 'import logging\nrpfs.log.load()\nlogging.getLogger("lib").info("b")\n')
    assert after.stderr == "rpfs: INFO: b\n"


def test_a_record_names_the_caller_and_exceptions_keep_their_traceback():
    r = run('rpfs.log.configure(format="%(module)s:%(funcName)s %(message)s")\n'
            'def here():\n'
            '    try:\n'
            '        1 / 0\n'
            '    except ZeroDivisionError:\n'
            '        rpfs.log.get_logger("t").exception("failed")\n'
            'here()\n')
    assert r.stderr.startswith("<string>:here failed\n")
    assert "ZeroDivisionError" in r.stderr
