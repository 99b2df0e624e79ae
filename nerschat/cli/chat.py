"""`nerschat chat`: a terminal chat with any registered LLM, streaming its answers.

Everything shown that the user typed, a server sent or the registry holds (model names,
replies, error messages) is plain text, with control characters escaped (`one_line`,
`printable`): no markup in it is interpreted and it cannot drive the terminal.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import openai
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.text import Text

from nerschat.cli.common import FiniteFloat, fail, one_line, printable, registry_option
from nerschat.client.connect import connect, pool_of
from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints
from nerschat.registry import Registry

HELP = "commands: /reset (forget history), /model NAME (switch model), /models, /quit"


class ChatSession:
    """History plus the model it is talking to; the loop below does the I/O."""

    def __init__(self, client: openai.OpenAI, model: str, system_prompt: str | None):
        self.client = client
        self.model = model
        self.system_prompt = system_prompt
        self.history: list[ChatCompletionMessageParam] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation, keeping only the system prompt (if any)."""
        self.history = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []

    def stream_reply(self, text: str, max_tokens: int, temperature: float) -> Iterator[str]:
        """Yield the reply's text pieces as they stream in.

        `max_tokens` caps the reply in tokens. The exchange joins the history only once complete;
        on any error (e.g. `openai.APIError`, re-raised) the user turn is dropped again.
        """
        self.history.append({"role": "user", "content": text})
        pieces: list[str] = []
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=self.history, stream=True,
                max_tokens=max_tokens, temperature=temperature)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    yield chunk.choices[0].delta.content
        except BaseException:
            self.history.pop()  # a failed turn is not part of the conversation
            raise
        self.history.append({"role": "assistant", "content": "".join(pieces)})


def llm_models(client: openai.OpenAI) -> list[str]:
    """Sorted served-model names of the LLM endpoints in the registry behind `client`."""
    registry = pool_of(client).registry
    return sorted({e.model for e in registry.endpoints(kind="llm")})


@click.command()
@click.option("--model", default=None, help="Served model name [default: the first LLM ready].")
@click.option("--system", "system_prompt", default=None, help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--temperature", type=FiniteFloat(0.0), default=0.7, show_default=True)
@click.option("--timeout", type=FiniteFloat(0.0, no_limit=True), default=600.0, show_default=True,
              help="Seconds to wait for a ready server.")
@registry_option
def chat(model: str | None, system_prompt: str | None, max_tokens: int, temperature: float,
         timeout: float, registry_path: str | None, shared: bool = False) -> None:
    """Chat with a registered LLM in the terminal."""
    console = Console()
    try:
        with console.status("waiting for a ready LLM endpoint") as status:
            wait_for_endpoints(Registry.of(registry_path), model, None if model else "llm", timeout,
                               on_status=lambda s: status.update(Text(one_line(f"waiting: {s}"))))
    except EndpointTimeout as exc:
        fail(str(exc))
    # One client for every LLM, routed by each request's model, so /model can switch.
    client = connect(None, "llm", registry_path, timeout, wait=False)
    model = model or llm_models(client)[0]
    session = ChatSession(client, model, system_prompt)
    console.print(Text.assemble(("nerschat chat", "bold"), " with ", (one_line(model), "cyan"),
                                f" — {HELP}"), highlight=False)
    while True:
        try:
            text = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session.reset()
            console.print("[dim]history cleared[/]")
            continue
        if text == "/models":
            console.print(Text(one_line(", ".join(llm_models(client)) or "no LLM ready")),
                          highlight=False)
            continue
        if text.startswith("/model"):
            name = text.removeprefix("/model").strip()
            if not name:
                console.print(Text.assemble("talking to ", (one_line(session.model), "cyan")),
                              highlight=False)
                continue
            session.model = name
            session.reset()
            console.print(Text.assemble("now talking to ", (one_line(name), "cyan"),
                                        " (history cleared)"), highlight=False)
            continue
        if text.startswith("/"):
            console.print(Text.assemble(("unknown command", "yellow"), " ", one_line(text),
                                        f"; {HELP}"), highlight=False)
            continue
        console.print(Text(f"{one_line(session.model)}> ", "bold cyan"), end="")
        try:
            for piece in session.stream_reply(text, max_tokens, temperature):
                console.print(printable(piece), end="", markup=False, highlight=False)
            console.print()
        except openai.APIError as exc:
            console.print()
            console.print(Text.assemble(("error:", "red"), " ", one_line(str(exc))),
                          highlight=False)
        except KeyboardInterrupt:
            console.print("\n[dim](interrupted)[/]")
