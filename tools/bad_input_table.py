"""Writes docs/bad-input.md from the messages recorded by tests/test_bad_input.py.

    DROPNAS_BAD_INPUT_REPORT=/tmp/bad.jsonl python -m pytest -q tests/test_bad_input.py
    python tools/bad_input_table.py --report=/tmp/bad.jsonl
"""

import json
import os
import re

from absl import app
from absl import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("report", None, "JSON-lines file written by the tests.", required=True)
flags.DEFINE_string("output", os.path.join(REPO_ROOT, "docs", "bad-input.md"),
                    "Markdown file to write.")

HEADER = """# Bad input and what the user sees

Each row is a case of tests/test_bad_input.py, run through the command line.
Every case exits with status 1, prints no traceback and leaves the outputs of
an earlier run in --model_dir as they were. The message is the last error line
the command printed. Regenerate this page with:

    DROPNAS_BAD_INPUT_REPORT=/tmp/bad.jsonl python -m pytest -q tests/test_bad_input.py
    python tools/bad_input_table.py --report=/tmp/bad.jsonl

| case | message |
|---|---|
"""


def main(argv):
    del argv
    with open(flags.FLAGS.report) as f:
        records = [json.loads(line) for line in f if line.strip()]
    rows = []
    for record in records:
        # Temporary folders of the test run become DIR.
        message = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/]+/", "DIR/", record["message"])
        message = message.replace("|", "\\|")
        rows.append(f"| {record['case']} | {message} |")
    with open(flags.FLAGS.output, "w") as f:
        f.write(HEADER + "\n".join(rows) + "\n")
    print(f"Wrote {len(rows)} rows to {flags.FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
