"""The plain-data example every task produces."""
from dataclasses import dataclass, field


@dataclass
class Example:
    """A token-string example.

    tokens:     the whole sequence, one string per token.
    scored:     positions whose token the model must predict (from the tokens before it);
                the training loss counts only these.
    answer_pos: for ranked evaluation, the position whose token is the answer (or -1).
    candidates: the answer set to rank at ``answer_pos`` (options never shown in context
                as options); ``answer`` is the correct one and is among them.
    kind:       a label for reports, e.g. "forward", "reversal", "episode".
    """

    tokens: list[str]
    scored: list[int]
    answer_pos: int = -1
    candidates: list[str] = field(default_factory=list)
    answer: str = ""
    kind: str = ""

    def __str__(self) -> str:
        text = " ".join(self.tokens)
        if self.answer:
            return f"[{self.kind}] {text}   (answer {self.answer} among {len(self.candidates)})"
        return f"[{self.kind}] {text}"
