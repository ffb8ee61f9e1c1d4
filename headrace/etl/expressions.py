"""The formula language of ETL steps: a tokenizer, a parser into an AST checked against an allowlist, an evaluator.

Formulas are never handed to Python's eval/exec/compile: the parser only builds the node types below, and
the evaluator only knows the operators and functions listed in OPERATORS and FUNCTIONS.

Grammar, loosest binding first:

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := additive (("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") additive
                            | "not"? "in" "(" expr ("," expr)* ")"
                            | "is" "not"? "null")?
    additive   := term (("+" | "-") term)*
    term       := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | primary
    primary    := number | 'text' | "text" | true | false | null | field | `any field` | name "(" args ")"
                | "(" expr ")"

Values are JSON values (null, booleans, numbers, text, lists, objects); dates travel as ISO-8601 text. Null
propagates as in SQL: arithmetic and comparisons with null give null, and a filter keeps a record only when
its formula is true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from headrace.models.inference import format_datetime, parse_date, parse_datetime, to_text

# Bounds on what a formula may cost: its text, its nesting (the parser and evaluator recurse), the digits
# round() may take (Python computes 10**digits), and the text a formula may build.
MAX_FORMULA_LENGTH = 4000
MAX_DEPTH = 64
MAX_ROUND_DIGITS = 30
MAX_TEXT_LENGTH = 1_000_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class FormulaError(ValueError):
    """A formula that cannot be parsed or is not allowed; raised when the ETL is configured."""


class EvaluationError(ValueError):
    """A formula that failed on one record; that record is rejected with this reason."""


# ---------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`(?:[^`]|``)+`)
  | (?P<param>@[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op><=|>=|!=|<>|==|[-+*/%()<>=,\[\]])
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, keyword, op, end
    text: str
    value: Any
    position: int


def _unescape(body: str, quote: str) -> str:
    if quote == "'":
        body = body.replace("''", "'")
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FormulaError(f"unexpected character {text[position]!r} at position {position}")
        kind = match.lastgroup
        raw = match.group()
        if kind == "number":
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(Token("number", raw, value, position))
        elif kind == "string":
            tokens.append(Token("string", raw, _unescape(raw[1:-1], raw[0]), position))
        elif kind == "quoted":
            tokens.append(Token("name", raw, raw[1:-1].replace("``", "`"), position))
        elif kind == "name":
            lowered = raw.lower()
            if lowered in KEYWORDS:
                tokens.append(Token("keyword", lowered, lowered, position))
            else:
                tokens.append(Token("name", raw, raw, position))
        elif kind == "param":
            tokens.append(Token("param", raw, raw[1:], position))
        elif kind == "op":
            tokens.append(Token("op", raw, raw, position))
        position = match.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


# ---------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class InList:
    operand: Node
    options: tuple[Node, ...]
    negated: bool


@dataclass(frozen=True)
class IsNull:
    operand: Node
    negated: bool


@dataclass(frozen=True)
class Param:
    """`@name`: the value of a parametric step's parameter for the run at hand."""

    name: str


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


Node = Literal | Field | Param | Unary | Binary | InList | IsNull | Call


# ---------------------------------------------------------------- the allowlist


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationError(f"{what} needs a number, got {_describe(value)}")
    return value


def _text(value: Any) -> str:
    return to_text(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed
        day = parse_date(value)
        if day is not None:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    raise EvaluationError(f"not a date or datetime: {_describe(value)}")


_TRUNCATE = {
    "year": lambda d: d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0),
    "month": lambda d: d.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    "day": lambda d: d.replace(hour=0, minute=0, second=0, microsecond=0),
    "hour": lambda d: d.replace(minute=0, second=0, microsecond=0),
    "minute": lambda d: d.replace(second=0, microsecond=0),
    "second": lambda d: d.replace(microsecond=0),
}


def _date_trunc(unit: Any, value: Any) -> str:
    if unit not in _TRUNCATE:
        raise EvaluationError(f"date_trunc unit must be one of {', '.join(_TRUNCATE)}, got {_describe(unit)}")
    return format_datetime(_TRUNCATE[unit](_as_datetime(value)))


def _substr(text: Any, start: Any, length: Any = None) -> str:
    value = _text(text)
    begin = max(int(_number(start, "substr")) - 1, 0)  # 1-based, as in SQL
    if length is None:
        return value[begin:]
    return value[begin : begin + max(int(_number(length, "substr")), 0)]


def _round(value: Any, digits: Any = 0) -> float | int:
    places = int(_number(digits, "round"))
    if not -MAX_ROUND_DIGITS <= places <= MAX_ROUND_DIGITS:
        raise EvaluationError(f"round() takes -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS} digits, got {places}")
    rounded = round(_number(value, "round"), places)
    return int(rounded) if digits == 0 else rounded


def _bounded_text(text: str) -> str:
    if len(text) > MAX_TEXT_LENGTH:
        raise EvaluationError(f"the text would have {len(text)} characters, more than {MAX_TEXT_LENGTH}")
    return text


def _replace(text: Any, old: Any, new: Any) -> str:
    source, pattern, replacement = _text(text), _text(old), _text(new)
    # Bound the result before building it: replacing '' inserts between every character.
    occurrences = len(source) + 1 if not pattern else source.count(pattern)
    if len(source) + occurrences * (len(replacement) - len(pattern)) > MAX_TEXT_LENGTH:
        raise EvaluationError(f"replace() would build more than {MAX_TEXT_LENGTH} characters")
    return source.replace(pattern, replacement)


def _to_int(value: Any) -> int:
    try:
        return int(float(value)) if isinstance(value, str) and not value.strip().lstrip("+-").isdigit() else int(value)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"cannot make an integer of {_describe(value)}") from exc


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"cannot make a number of {_describe(value)}") from exc


@dataclass(frozen=True)
class Function:
    implementation: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number
    null_in_null_out: bool = True  # a null argument gives null without calling the implementation


FUNCTIONS: dict[str, Function] = {
    "lower": Function(lambda s: _text(s).lower(), 1, 1),
    "upper": Function(lambda s: _text(s).upper(), 1, 1),
    "trim": Function(lambda s: _text(s).strip(), 1, 1),
    "length": Function(lambda s: len(s) if isinstance(s, (list, dict)) else len(_text(s)), 1, 1),
    "concat": Function(lambda *a: _bounded_text("".join(_text(v) for v in a if v is not None)), 1, None, False),
    "coalesce": Function(lambda *a: next((v for v in a if v is not None), None), 1, None, False),
    "substr": Function(_substr, 2, 3),
    "replace": Function(_replace, 3, 3),
    "round": Function(_round, 1, 2),
    "abs": Function(lambda x: abs(_number(x, "abs")), 1, 1),
    "floor": Function(lambda x: math.floor(_number(x, "floor")), 1, 1),
    "ceil": Function(lambda x: math.ceil(_number(x, "ceil")), 1, 1),
    "int": Function(_to_int, 1, 1),
    "float": Function(_to_float, 1, 1),
    "string": Function(_text, 1, 1),
    "date_trunc": Function(_date_trunc, 2, 2),
    "date": Function(lambda v: _as_datetime(v).date().isoformat(), 1, 1),
    "year": Function(lambda v: _as_datetime(v).year, 1, 1),
    "month": Function(lambda v: _as_datetime(v).month, 1, 1),
    "day": Function(lambda v: _as_datetime(v).day, 1, 1),
    "now": Function(lambda: format_datetime(datetime.now(UTC)), 0, 0, False),
    "if": Function(lambda cond, yes, no: yes if cond is True else no, 3, 3, False),
}

OPERATORS = frozenset({"+", "-", "*", "/", "%", "=", "!=", "<", "<=", ">", ">=", "and", "or", "not", "in", "is null"})


def _describe(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:80]


# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_FORMULA_LENGTH:
            raise FormulaError(f"a formula has at most {MAX_FORMULA_LENGTH} characters, this one {len(text)}")
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    def nested(self) -> None:
        """Count one more level of nesting; the parser (and the evaluator after it) recurse once per level."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep")

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, text: str) -> bool:
        if self.current.kind == kind and self.current.text == text:
            self.index += 1
            return True
        return False

    def expect(self, kind: str, text: str) -> None:
        if not self.accept(kind, text):
            raise self.error(f"expected {text!r}")

    def error(self, message: str) -> FormulaError:
        found = self.current.text or "the end"
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "…"
        return FormulaError(f"{message} at position {self.current.position} (found {found[:40]!r}) in {shown!r}")

    def parse(self) -> Node:
        if self.current.kind == "end":
            raise self.error("empty formula")
        node = self.parse_or()
        if self.current.kind != "end":
            raise self.error("unexpected text")
        return node

    def parse_or(self) -> Node:
        self.nested()
        node = self.parse_and()
        while self.accept("keyword", "or"):
            node = Binary("or", node, self.parse_and())
        self.depth -= 1
        return node

    def parse_and(self) -> Node:
        node = self.parse_not()
        while self.accept("keyword", "and"):
            node = Binary("and", node, self.parse_not())
        return node

    def parse_not(self) -> Node:
        if self.accept("keyword", "not"):
            self.nested()
            node = Unary("not", self.parse_not())
            self.depth -= 1
            return node
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        node = self.parse_additive()
        token = self.current
        if token.kind == "op" and token.text in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            self.take()
            op = {"==": "=", "<>": "!="}.get(token.text, token.text)
            return Binary(op, node, self.parse_additive())
        if token.kind == "keyword" and token.text == "is":
            self.take()
            negated = self.accept("keyword", "not")
            self.expect("keyword", "null")
            return IsNull(node, negated)
        negated = False
        if token.kind == "keyword" and token.text == "not" and self.tokens[self.index + 1].text == "in":
            self.take()
            negated = True
        if self.accept("keyword", "in"):
            closing = ")" if self.accept("op", "(") else "]" if self.accept("op", "[") else None
            if closing is None:
                raise self.error("expected '(' after in")
            options = [self.parse_or()]
            while self.accept("op", ","):
                options.append(self.parse_or())
            self.expect("op", closing)
            return InList(node, tuple(options), negated)
        return node

    def parse_additive(self) -> Node:
        node = self.parse_term()
        while self.current.kind == "op" and self.current.text in ("+", "-"):
            node = Binary(self.take().text, node, self.parse_term())
        return node

    def parse_term(self) -> Node:
        node = self.parse_unary()
        while self.current.kind == "op" and self.current.text in ("*", "/", "%"):
            node = Binary(self.take().text, node, self.parse_unary())
        return node

    def parse_unary(self) -> Node:
        if self.current.kind == "op" and self.current.text in ("-", "+"):
            sign = self.take().text
            self.nested()
            operand = self.parse_unary()
            self.depth -= 1
            return Unary("-", operand) if sign == "-" else operand
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.current
        if token.kind in ("number", "string"):
            self.take()
            if isinstance(token.value, int) and not INT64_MIN <= token.value <= INT64_MAX:
                raise FormulaError(
                    f"integer {token.text[:30]} at position {token.position} is outside the 64-bit range"
                )
            return Literal(token.value)
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            self.take()
            return Literal({"true": True, "false": False, "null": None}[token.text])
        if token.kind == "param":
            self.take()
            return Param(token.value)
        if token.kind == "name":
            self.take()
            if token.text[0] != "`" and self.accept("op", "("):
                return self.parse_call(token)
            return Field(token.value)
        if self.accept("op", "("):
            node = self.parse_or()
            self.expect("op", ")")
            return node
        raise self.error("expected a value, a field or a function call")

    def parse_call(self, name: Token) -> Node:
        function_name = name.text.lower()
        function = FUNCTIONS.get(function_name)
        if function is None:
            raise FormulaError(
                f"unknown function {name.text!r} at position {name.position}; allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        args: list[Node] = []
        if not self.accept("op", ")"):
            args.append(self.parse_or())
            while self.accept("op", ","):
                args.append(self.parse_or())
            self.expect("op", ")")
        if len(args) < function.min_args or (function.max_args is not None and len(args) > function.max_args):
            expected = (
                str(function.min_args)
                if function.min_args == function.max_args
                else f"{function.min_args} or more"
                if function.max_args is None
                else f"{function.min_args} to {function.max_args}"
            )
            raise FormulaError(f"{function_name}() takes {expected} arguments, got {len(args)}")
        return Call(function_name, tuple(args))


def parse(text: str) -> Node:
    """The AST of a formula; raises FormulaError for anything outside the language or the allowlist."""
    return _Parser(text).parse()


def fields_of(node: Node) -> set[str]:
    """The record fields a formula reads."""
    if isinstance(node, Field):
        return {node.name}
    if isinstance(node, Literal | Param):
        return set()
    if isinstance(node, Unary):
        return fields_of(node.operand)
    if isinstance(node, Binary):
        return fields_of(node.left) | fields_of(node.right)
    if isinstance(node, InList):
        return fields_of(node.operand).union(*(fields_of(o) for o in node.options))
    if isinstance(node, IsNull):
        return fields_of(node.operand)
    return set().union(*(fields_of(a) for a in node.args))


# ---------------------------------------------------------------- evaluator


def _arithmetic(op: str, left: Any, right: Any) -> Any:
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return _bounded_text(left + right)
    a, b = _number(left, op), _number(right, op)
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif b == 0:
        raise EvaluationError(f"division by zero in {op}")
    elif op == "/":
        result = a / b
    else:
        result = a % b
    if isinstance(result, int) and not INT64_MIN <= result <= INT64_MAX:
        raise EvaluationError(f"integer overflow in {op}: the result is outside the 64-bit range")
    return result


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    if not numeric and not (isinstance(left, str) and isinstance(right, str)):
        raise EvaluationError(f"cannot compare {_describe(left)} with {_describe(right)}")
    # Both numbers or both strings by now: their comparisons are bools.
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def truth(value: Any) -> bool | None:
    """A value as a condition: null stays null; zero, '' and empty lists or objects are false (as in SQL steps)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def evaluate(node: Node, record: dict[str, Any], params: dict[str, Any] | None = None) -> Any:
    """The value of a formula over one record; a missing field is null; `params` are a parametric step's values."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Field):
        return record.get(node.name)
    if isinstance(node, Param):
        if params is None or node.name not in params:
            raise EvaluationError(f"@{node.name} has no value here")
        return params[node.name]
    if isinstance(node, Binary):
        return _evaluate_binary(node, record, params)
    if isinstance(node, Unary):
        return _evaluate_unary(node, record, params)
    if isinstance(node, IsNull):
        return (evaluate(node.operand, record, params) is None) != node.negated
    if isinstance(node, InList):
        return _evaluate_in_list(node, record, params)
    return _evaluate_call(node, record, params)


def _evaluate_binary(node: Binary, record: dict[str, Any], params: dict[str, Any] | None) -> Any:
    if node.op in ("and", "or"):
        return _evaluate_logical(node, record, params)
    left, right = evaluate(node.left, record, params), evaluate(node.right, record, params)
    if left is None or right is None:
        return None
    if node.op in ("+", "-", "*", "/", "%"):
        return _arithmetic(node.op, left, right)
    return _compare(node.op, left, right)


def _evaluate_logical(node: Binary, record: dict[str, Any], params: dict[str, Any] | None) -> bool | None:
    """Three-valued logic on the truth of each side, as SQL's AND and OR; the right side only when it decides."""
    left = truth(evaluate(node.left, record, params))
    decided = left is (node.op == "or")
    if decided:
        return left
    right = truth(evaluate(node.right, record, params))
    if right is (node.op == "or"):
        return right
    return None if left is None or right is None else right


def _evaluate_unary(node: Unary, record: dict[str, Any], params: dict[str, Any] | None) -> Any:
    value = evaluate(node.operand, record, params)
    if value is None:
        return None
    if node.op == "not":
        return not truth(value)
    return -_number(value, "-")


def _evaluate_in_list(node: InList, record: dict[str, Any], params: dict[str, Any] | None) -> bool | None:
    value = evaluate(node.operand, record, params)
    if value is None:
        return None
    found = any(value == evaluate(option, record, params) for option in node.options)
    return found != node.negated


def _evaluate_call(node: Call, record: dict[str, Any], params: dict[str, Any] | None) -> Any:
    if node.function == "if":
        # Only the branch taken is evaluated, as SQL's CASE does: the other may fail (a division by zero).
        condition = evaluate(node.args[0], record, params)
        return evaluate(node.args[1] if condition is True else node.args[2], record, params)
    if node.function == "coalesce":
        for arg in node.args:
            value = evaluate(arg, record, params)
            if value is not None:
                return value
        return None
    function = FUNCTIONS[node.function]
    args = [evaluate(a, record, params) for a in node.args]
    if function.null_in_null_out and any(a is None for a in args):
        return None
    try:
        return function.implementation(*args)
    except EvaluationError:
        raise
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        raise EvaluationError(f"{node.function}(): {exc}") from exc
