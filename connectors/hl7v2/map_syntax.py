"""The cell syntax of the HL7 v2-to-FHIR IG's mapping tables, parsed into data by generate.py: conditions
(`IF PV1-2 NOT VALUED`), FHIR target paths (`identifier[2].type`) and assignments (`"usual"`, `PID-5 + " "`)."""

from __future__ import annotations

import re
from typing import Any

class Unparsed(ValueError):
    """A cell the generator cannot turn into data (the message is the reason in skipped.json)."""


# ---------------------------------------------------------------------------------------------- conditions

TOKEN = re.compile(r"""\s*(?:("[^"]*"|'[^']*')|(<=|>=|!=|=|<|>|\(|\)|,)|([^\s()",=<>!]+))""")
SEG_REF = re.compile(r"^[A-Z][A-Z0-9]{2}-\d+(?:\.\d+){0,2}$")
COMP_REF = re.compile(r"^[A-Z]{2,3}\.\d+(?:\.\d+)?$")
SEG_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
KEYWORDS = {"IF", "AND", "OR", "NOT", "IS", "IN", "VALUED", "VALUE", "EQUALS", "EQUAL", "TO", "DOES", "EXIST",
            "EXISTS", "EMPTY", "GREATER", "LESS", "THAN", "LENGTH", "COUNT", "LST.COUNT"}


class ConditionParser:
    """Recursive descent over the IG's pseudo-code (see the module docstring for the output)."""

    def __init__(self, text: str, self_ref: str, datatype: str | None = None):
        self.text, self.self_ref, self.datatype = text, self_ref, datatype
        self.toks: list[tuple[str, str]] = []  # (kind, text): kind s = string, p = punctuation, w = word
        pos, text = 0, text.strip()
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise Unparsed(f"unparsed condition (bad character at {pos})")
            if m.group(1):
                self.toks.append(("s", m.group(1)[1:-1]))
            elif m.group(2):
                self.toks.append(("p", m.group(2)))
            elif m.group(3):
                self.toks.append(("w", m.group(3)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def parse(self) -> dict:
        node = self.or_expr()
        if self.i != len(self.toks):
            raise Unparsed(f"unparsed condition (unexpected {self.toks[self.i][1]!r})")
        return node

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        if j >= len(self.toks):
            return ""
        kind, text = self.toks[j]
        return text.upper() if kind == "w" else ("\0" + text if kind == "s" else text)

    def take(self, *words: str) -> bool:
        if self.peek() in words:
            self.i += 1
            return True
        return False

    def operand_at(self, k: int = 0) -> str | None:
        j = self.i + k
        if j >= len(self.toks) or self.toks[j][0] != "w":
            return None
        word = self.toks[j][1]
        if SEG_REF.match(word) or COMP_REF.match(word):
            return word
        if self.datatype and re.fullmatch(rf"{re.escape(self.datatype)}-\d+(?:\.\d+)?", word):
            return word.replace("-", ".")  # repair: 'HD-3' in the HD map means component HD.3
        if SEG_NAME.match(word) and word.upper() not in KEYWORDS:
            return word
        return None

    def or_expr(self) -> dict:
        items = [self.and_expr()]
        while self.take("OR"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else {"or": items}

    def and_expr(self) -> dict:
        items: list[dict] = []
        pending: list[str] = []
        joiner = ""
        while True:
            while self.take("IF"):
                pass
            ref = self.operand_at()
            if ref and self.peek(1) in ("AND", "OR") and self.operand_at(2):
                if joiner and joiner != self.peek(1):
                    raise Unparsed("unparsed condition (mixed distributed operands)")
                joiner = self.peek(1)  # 'IF PID-33 AND PID-34 VALUED': the predicate applies to both
                pending.append(ref)
                self.i += 2
                continue
            node = self.unary()
            if pending:
                shared = [self.substitute(node, other) for other in pending] + [node]
                items.extend(shared) if joiner == "AND" else items.append({"or": shared})
            else:
                items.append(node)
            pending, joiner = [], ""
            if self.take("AND"):
                continue
            if self.operand_at() and self.peek(1) not in ("", "AND", "OR", ")"):
                continue  # 'IF XCN.19 NOT VALUED XCN.20 NOT VALUED': a missing AND
            break
        return items[0] if len(items) == 1 else {"and": items}

    def substitute(self, node: dict, ref: str) -> dict:
        (op, args), = node.items()
        if op == "valued":
            return {"valued": {"ref": ref}}
        if op == "not" and "valued" in args:
            return {"not": {"valued": {"ref": ref}}}
        if isinstance(args, list) and isinstance(args[0], dict) and "ref" in args[0]:
            return {op: [{"ref": ref}, *args[1:]]}
        raise Unparsed("unparsed condition (distributed operand)")

    def unary(self) -> dict:
        while self.take("IF"):
            pass
        if self.peek() == "NOT" and self.peek(1) not in ("VALUED", "VALUE", "IN", "EQUAL", "EQUALS", "TO"):
            self.i += 1
            return {"not": self.unary()}
        if self.take("("):
            node = self.or_expr()
            if not self.take(")") and self.i != len(self.toks):
                raise Unparsed("unparsed condition (unbalanced parenthesis)")
            return node  # a '(' left open at the end is closed there (repair)
        ref = self.operand_at()
        if ref:
            self.i += 1
        elif self.peek() in ("NOT", "IS", "VALUED", "EQUALS", "IN", "=", "!="):
            ref = self.self_ref  # a bare predicate applies to the row's own field or component
        else:
            raise Unparsed(f"unparsed condition (no operand at {self.peek()!r})")
        node = self.predicate(ref)
        while self.peek() in ("NOT", "IS", "EQUALS", "EQUAL", "IN", "=", "!=") and self.peek(1) != "":
            node = {"and": [node, self.predicate(ref)]}  # 'PID-11.9 IS VALUED NOT EQUAL PID-12'
        return node

    def predicate(self, ref: str) -> dict:
        subject = {"ref": ref}
        if self.take("VALUED", "VALUE", "EXISTS"):
            return {"valued": subject}
        if self.take("LST.COUNT", "COUNT"):
            return {self.count_op(): [subject, self.number()]}
        if self.take("LENGTH"):
            if self.take("GREATER") and self.take("THAN"):
                return {"len_gt": [subject, self.number()]}
            raise Unparsed("unparsed condition (LENGTH)")
        if self.take("DOES"):
            if self.take("NOT") and self.take("EXIST", "EXISTS"):
                return {"not": {"valued": subject}}
            raise Unparsed("unparsed condition (DOES)")
        negate = False
        if self.take("IS"):
            if self.take("EMPTY"):
                return {"not": {"valued": subject}}
            negate = self.take("NOT")
        elif self.take("NOT"):
            negate = True
        elif self.take("!="):
            negate = True
        if self.take("VALUED", "VALUE"):
            return {"not": {"valued": subject}} if negate else {"valued": subject}
        if self.take("IN"):
            return {"not_in" if negate else "in": [subject, self.literal_list()]}
        self.take("EQUALS", "EQUAL", "=")
        self.take("TO")
        return {"ne" if negate else "eq": [subject, self.value()]}

    def count_op(self) -> str:
        if self.take(">"):
            return "count_gt"
        if self.take("="):
            return "count_eq"
        if self.take("<="):
            return "count_le"
        if self.take("EQUALS", "EQUAL"):
            return "count_eq"
        if self.take("GREATER") and self.take("THAN"):
            return "count_gt"
        if self.take("LESS") and self.take("THAN"):
            if self.take("OR") and self.take("EQUALS", "EQUAL"):
                return "count_le"
            return "count_lt"
        raise Unparsed("unparsed condition (count comparison)")

    def number(self) -> int:
        word = self.peek()
        if not word.isdigit():
            raise Unparsed("unparsed condition (number expected)")
        self.i += 1
        return int(word)

    def value(self) -> Any:
        if self.i >= len(self.toks):
            raise Unparsed("unparsed condition (value expected)")
        kind, text = self.toks[self.i]
        if kind == "s":
            self.i += 1
            return text
        ref = self.operand_at()
        if ref:
            self.i += 1
            return {"ref": ref}
        if kind == "w" and re.fullmatch(r"[A-Za-z0-9]{1,5}", text) and text.upper() not in KEYWORDS:
            self.i += 1
            return text  # an unquoted code
        raise Unparsed(f"unparsed condition (value {text!r} not computable)")

    def literal_list(self) -> list[str]:
        if not self.take("("):
            raise Unparsed("unparsed condition (IN without a list)")
        values = [self.literal()]
        while self.take(","):
            values.append(self.literal())
        if not self.take(")"):
            raise Unparsed("unparsed condition (unclosed list)")
        return values

    def literal(self) -> str:
        value = self.value()
        if not isinstance(value, str):
            raise Unparsed("unparsed condition (literal expected)")
        return value


def parse_condition(text: str, self_ref: str, datatype: str | None = None) -> dict | None:
    """The condition AST of a pseudo-code cell, None for an empty cell; raises Unparsed."""
    if not text.strip():
        return None
    return ConditionParser(text, self_ref, datatype).parse()


# ---------------------------------------------------------------------------------------------- paths

STEP = re.compile(r"(\$?[A-Za-z_]*)(?:\[([^\]]*)\])?")
ELEMENT = re.compile(r"^[a-z][A-Za-z0-9]*$")
TYPE = re.compile(r"^[A-Z][A-Za-z]*$")


def parse_slot(text: str | None) -> Any:
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text == "each":
        return "each"
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m:
        return [int(m.group(1)), int(m.group(2))]
    raise Unparsed(f"unparsed target (slot [{text}])")


def parse_path(text: str, *, relative: bool = False) -> list[list]:
    """FHIR target steps of a path such as 'performer[2](PractitionerRole[1].organization(Organization))'."""
    text = text.strip()
    if text in ("$this", "$value", ""):
        return []
    steps: list[list] = []
    i = 0
    while i < len(text):
        if text[i] == ".":
            i += 1
            continue
        m = STEP.match(text, i)
        if not m or m.end() == i:
            raise Unparsed(f"unparsed target (at {text[i:]!r})")
        name, slot = m.group(1), parse_slot(m.group(2))
        i = m.end()
        if name in ("$this", "$value") and slot is None:
            continue
        if name == "" and not (relative and not steps and slot is not None):
            raise Unparsed("unparsed target (empty element)")
        if name and not ELEMENT.match(name):
            raise Unparsed(f"unparsed target (element {name!r})")
        step: list = [name, slot]
        if i < len(text) and text[i] == "(":
            depth, j = 0, i
            while j < len(text):
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            if depth:
                raise Unparsed("unparsed target (unbalanced parenthesis)")
            inner = text[i + 1:j]
            i = j + 1
            m2 = re.match(r"([A-Z][A-Za-z]*)(?:\[(\d+)\])?", inner)
            if not m2:
                raise Unparsed(f"unparsed target (hop {inner!r})")
            step.append(m2.group(1))
            if m2.group(2):
                step.append(int(m2.group(2)))
            steps.append(step)
            steps.extend(parse_path(inner[m2.end():]))
            continue
        steps.append(step)
    return [trim(step) for step in steps]


def trim(step: list) -> list:
    while len(step) > 1 and step[-1] is None:
        step = step[:-1]
    return step


# ---------------------------------------------------------------------------------------------- assignments

ASSIGN_REF = re.compile(r"^(?:[A-Z][A-Z0-9]{2}-\d+|[A-Z]{2,3}\.\d+)(?:\.\d+){0,2}$")


def parse_assignment(text: str) -> dict | None:
    """{"const": …} or {"concat": […]} from an Assignment cell; raises Unparsed for prose and the like."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("/") or text.startswith("#"):
        raise Unparsed("prose assignment")
    parts: list[Any] = []
    for token in split_plus(text):
        token = token.strip()
        if len(token) >= 2 and token[0] == token[-1] == '"' and '"' not in token[1:-1]:
            parts.append(token[1:-1])
        elif ASSIGN_REF.match(token):
            parts.append({"ref": token})
        else:
            raise Unparsed(f"unparsed assignment ({token!r})")
    if len(parts) == 1 and isinstance(parts[0], str):
        return {"const": parts[0].strip()}  # repair: stray spaces inside constants (' http://…')
    return {"concat": parts}


def split_plus(text: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "+" and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if quoted:
        raise Unparsed("unparsed assignment (unbalanced quote)")
    out.append(cur)
    return out
