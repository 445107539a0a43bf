"""Run a thread of prompts through jupyter-ai-magics' ``%%ai`` (in the peers' venv); print the answers.

stdin: {"prompts": [...], "model": "openai-chat:gpt-4o-mini", "max_history": int | null}
stdout: a line "@@result@@" + {"answers": [...], "seconds": [...]}
The server comes from OPENAI_BASE_URL / OPENAI_API_BASE, the key from OPENAI_API_KEY (a dummy).
"""

import json
import sys
import time

from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


class Quiet(DisplayPublisher):
    def publish(self, *args, **kwargs):
        pass


def main() -> None:
    args = json.loads(sys.stdin.read())
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    shell.display_pub = Quiet(shell=shell)
    shell.run_cell("%load_ext jupyter_ai_magics").raise_error()
    if args.get("max_history") is not None:
        shell.run_cell(f"%config AiMagics.max_history = {int(args['max_history'])}").raise_error()
    answers, seconds = [], []
    for prompt in args["prompts"]:
        started = time.perf_counter()
        result = shell.run_cell(f"%%ai {args['model']}\n{prompt}")
        seconds.append(time.perf_counter() - started)
        result.raise_error()
        shown = result.result
        data = getattr(shown, "data", shown)
        answers.append(data if isinstance(data, str) else str(data))
    print("@@result@@" + json.dumps({"answers": answers, "seconds": seconds}))


if __name__ == "__main__":
    main()
