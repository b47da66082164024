"""Which language model the engine has loaded (it changes on a switch_model directive)."""

from __future__ import annotations

from engine_stub.load_model import check_model


class LoadedModel:
    """The model in GPU memory; requests for another language fail FAILED_PRECONDITION."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.switches = 0

    def check(self, requested: str) -> None:
        check_model(requested, self.lang)

    def replace(self, lang: str) -> None:
        if lang != self.lang:
            self.lang = lang
            self.switches += 1
