"""Reports: what every check returns.

A :class:`Report` is a list of :class:`Row` s, one per check, for one layer.  A row passes,
fails, or is *inconclusive*: the check could not say anything about the layer with this input
(the input saturates a sigmoid, or kills every ReLU), which is no evidence against the layer.
``report.ok`` is True when no row failed -- an inconclusive row does not fail the layer, since
a correct layer must never fail -- and ``report.status`` is ``"PASS"``, ``"INCONCLUSIVE"`` or
``"FAIL"``.  ``str(report)`` is a small table; ``report.summary()`` is one line when everything
passed, that line and the inconclusive rows when some were, and the whole table when something
failed; ``report.to_dict()`` is the same as plain data (for ``--json``).  No check ever raises
on a broken layer: an exception inside the layer becomes a failed row whose detail is the
error's type and message.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    """One check: its name, PASS/FAIL, a sentence, and the numbers that go with it."""

    check: str
    ok: bool
    detail: str = ""
    max_rel_error: float | None = None   # finite-difference checks
    kinks: int | None = None             # finite-difference checks: coordinates skipped
    steps: int | None = None             # overfit checks: optimizer steps taken
    loss: float | None = None            # overfit checks: final loss
    coords: list | None = None           # finite-difference checks: indices compared
    inconclusive: bool = False           # ok, but proves nothing (the input, not the layer)

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else "INCONCLUSIVE" if self.inconclusive else "PASS"


@dataclass
class Report:
    """All the checks run on one layer."""

    layer: str
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No row failed (inconclusive rows do not fail), and there is at least one row."""
        return bool(self.rows) and all(row.ok for row in self.rows)

    @property
    def status(self) -> str:
        """``"PASS"``, ``"INCONCLUSIVE"`` (ok, but some check proved nothing) or ``"FAIL"``."""
        if not self.ok:
            return "FAIL"
        return "INCONCLUSIVE" if self.inconclusive() else "PASS"

    def inconclusive(self) -> list[str]:
        """Names of the checks that were inconclusive."""
        return [row.check for row in self.rows if row.inconclusive]

    def add(self, check: str, ok: bool, detail: str = "", **numbers) -> Row:
        row = Row(check, bool(ok), detail, **numbers)
        self.rows.append(row)
        return row

    def failed(self) -> list[str]:
        """Names of the checks that failed."""
        return [row.check for row in self.rows if not row.ok]

    def row(self, check: str) -> Row:
        """The row of the check called ``check`` (KeyError when there is none)."""
        for row in self.rows:
            if row.check == check:
                return row
        raise KeyError(f"no check named {check!r} in the report of {self.layer}")

    def summary(self) -> str:
        """One line when every check passed (count and worst relative error), that line and the
        inconclusive rows when some were, else ``str(self)``."""
        if not self.ok:
            return str(self)
        errors = [r.max_rel_error for r in self.rows if r.max_rel_error is not None]
        worst = f", worst relative error {max(errors):.1e}" if errors else ""
        line = f"{self.layer}: {self.status} ({len(self.rows)} checks{worst})"
        return "\n".join([line] + [f"  {r.check}: {r.detail}"
                                    for r in self.rows if r.inconclusive])

    def to_dict(self) -> dict:
        rows = []
        for row in self.rows:
            d = asdict(row)
            for key, value in d.items():        # JSON has no NaN or infinity
                if isinstance(value, float) and not math.isfinite(value):
                    d[key] = str(value)
            rows.append(d)
        return {"layer": self.layer, "ok": self.ok, "status": self.status, "checks": rows}

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        """The report :meth:`to_dict` described (non-finite numbers back to floats)."""
        report = cls(data["layer"])
        for d in data["checks"]:
            d = dict(d)
            for key in ("max_rel_error", "loss"):
                if isinstance(d.get(key), str):
                    d[key] = float(d[key])
            if d.get("coords") is not None:
                d["coords"] = [tuple(c) for c in d["coords"]]
            report.rows.append(Row(**d))
        return report

    def __str__(self) -> str:
        lines = [f"{self.layer}: {self.status}"]
        body = [[r.check, fmt_error(r.max_rel_error), fmt_int(r.kinks), fmt_int(r.steps),
                 r.status, r.detail] for r in self.rows]
        header = ["check", "max rel. error", "kinks skipped", "steps", "result", "detail"]
        lines += ["  " + line for line in table(header, body)]
        return "\n".join(lines)


def fmt_error(value) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else f"{value:.1e}"


def fmt_int(value) -> str:
    return "" if value is None else str(value)


def table(header: list[str], body: list[list[str]]) -> list[str]:
    """Left-aligned columns; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header) - 1)]

    def line(cells):
        padded = [str(c).ljust(w) for c, w in zip(cells, widths)] + [str(cells[-1])]
        return "  ".join(padded).rstrip()

    return [line(header)] + [line(r) for r in body]


def error_text(err: BaseException) -> str:
    """``"ValueError: first line of the message"`` (at most 300 characters)."""
    message = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {message[0] if message else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def layer_name(layer) -> str:
    """``repr(layer)`` when the layer defines one, else its class name."""
    try:
        text = repr(layer)
    except Exception:                    # a student's __repr__ may itself be broken
        text = ""
    if not text or text.startswith("<") or len(text) > 120:
        return type(layer).__name__
    return text
