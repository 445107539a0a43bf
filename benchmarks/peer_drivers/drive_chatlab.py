"""Run a thread of prompts through chatlab's ``Chat`` (in the peers' venv); print the answers.

stdin: {"prompts": [...], "model": "gpt-4o-mini", "base_url": "..."}
stdout: a line "@@result@@" + {"answers": [...], "seconds": [...]}
"""

import asyncio
import json
import sys
import time

from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


class Quiet(DisplayPublisher):
    def publish(self, *args, **kwargs):
        pass


async def thread(args):
    from chatlab import Chat

    chat = Chat(model=args["model"], base_url=args["base_url"], api_key="dummy")
    answers, seconds = [], []
    for prompt in args["prompts"]:
        started = time.perf_counter()
        await chat.submit(prompt)
        seconds.append(time.perf_counter() - started)
        answers.append(chat.messages[-1]["content"])
    return answers, seconds


def main() -> None:
    args = json.loads(sys.stdin.read())
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    shell.display_pub = Quiet(shell=shell)  # chatlab displays Markdown; nobody is watching here
    answers, seconds = asyncio.run(thread(args))
    print("@@result@@" + json.dumps({"answers": answers, "seconds": seconds}))


if __name__ == "__main__":
    main()
