"""Developer script: generate connectors/hl7v2/data/*.json from the HL7 v2-to-FHIR IG's mapping tables.

Run `python -m hearth.connectors.hl7v2.generate [MAPPINGS_DIR]` (default ../shared/spec/v2-to-fhir next to the
repository). It reads the message maps the supported events need, follows their segment, data type and
vocabulary maps transitively, applies the reviewed corrections in `overrides.py`, and writes deterministic JSON
(sorted keys, CSV order kept in lists, indent 1). The product reads only the generated files, never ../shared.

Every record carries `src` = "<folder>/<file>.csv:<n>", n the 1-based CSV *record* (row 1 is the group header,
row 2 the column names; a record may span several lines when a cell holds a newline).

Data format
-----------
events.json      {"ADT^A01": {"structure": "ADT_A01", "tree": "ADT_A01", "map": "ADT_A01"|null,
                               "handler"?: "merge", "note"?: str}, ...}   (only the supported events)
structures.json  {"ADT_A01": [item, ...]}; item = {"seg": "PID", "min": 1, "max": 1, "follow"?: "PID"}
                 or {"group": "NEXT_OF_KIN", "min": 0, "max": -1, "items": [item, ...]}; max -1 = unbounded
messages.json    {"ADT_A01": [message rule, ...]} in CSV order; message rule =
                 {"order": "15.1", "path": ["NEXT_OF_KIN", "NK1"], "follow"?: "PID", "when"?: cond,
                  "target"?: {"type": "RelatedPerson", "n"?: 2|"PID", "path"?: [step, ...], "assign"?: value},
                  "map"?: "NK1[RelatedPerson]",
                  "links"?: [{"from": {"type", "n"?}, "path": "patient", "to": {"type", "n"?}}
                             | {"from": {...}, "path": "entity.role", "const": "source"}], "src"}
segments.json    {"PID[Patient]": {"resource": "Patient", "src": file, "rules": [rule, ...]}}
datatypes.json   {"XPN[HumanName]": {"src": file, "rules": [rule, ...]}}
                 rule = {"field": 3 (segment maps) | "comp": 1, "sub"?: 2 (data type maps), "v2"?: "CX",
                         "when"?: cond, "path": [step, ...], "fhir"?: "Identifier", "dt"?: "CX[Identifier]",
                         "vocab"?: "<vocabulary key>", "assign"?: value, "note"?: str, "src"}
                 ("note": the row's only condition is prose such as 'If mapped to FHIR, …'; kept because no other
                 row of the same field offers a different prose alternative; message rules may carry it too)
                 step = [element] | [element, slot] | [element, slot, "Type"] | [element, slot, "Type", n]:
                 slot null, an int, "each" (one per repetition) or [lo, hi]; a "Type" is a hop to a separate
                 resource that the element references, the following steps apply inside it; element "" = a
                 sibling slot of the element being filled ("[2].given"); path [] = the element itself
                 ($this / $value).
                 value = {"const": "text"} | {"concat": ["text" | {"ref": "OBX-5.1"}, ...]}
vocabulary.json  {"administrativesex": {"name": "AdministrativeSex", "table"?: "HL70001", "src": file,
                  "codes": {"F": {"code": "female", "display"?: "Female", "system"?: uri, "src"}
                                 | {"code": null, "src"} (listed, no FHIR code)}}}; keys = normalised names
tables.json      {"<vocabulary key>": {"name", "table"?, "status"}} from the Code System inventory
skipped.json     [{"src", "why", "text"?}] every row (or reference) not turned into data, with the reason
overrides.json   [{"src", "why"}] the overrides applied (a copy of overrides.py's reasons, for review)

cond (conditions, parsed from the pseudo-code at generation time):
  {"valued": op} | {"not": cond} | {"and": [cond, ...]} | {"or": [cond, ...]}
  | {"eq"|"ne": [op, "lit" | op]} | {"in"|"not_in": [op, ["lit", ...]]}
  | {"count_gt"|"count_lt"|"count_le"|"count_eq": [op, n]} | {"len_gt": [op, n]}
  op = {"ref": "PID-11.9"} (segment field[.component[.sub]]) | {"ref": "XPN.12"} (component of the value being
  mapped) | {"ref": "ORC"} (segment present). A bare subject ("IF NOT VALUED") becomes the row's own field.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from hearth.connectors.hl7v2 import overrides
from hearth.connectors.hl7v2.map_syntax import Unparsed, parse_assignment, parse_condition, parse_path
from hearth.connectors.hl7v2.maps import norm

DATA = Path(__file__).parent / "data"
DEFAULT_MAPPINGS = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "v2-to-fhir"

# The events Hearth converts (issue 16); everything else is answered AR 200/201.
EVENTS = ("ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A06", "ADT^A08", "ADT^A11", "ADT^A13",
          "ADT^A40", "ORU^R01", "VXU^V04", "SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15")

# Column positions (the same in every file of a folder; the header names vary).
M_ORDER, M_ID, M_SYNTAX, M_NAME, M_MIN, M_MAX, M_COND, M_NARR, M_TARGET, M_MAP, M_REFS = 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11
S_ID, S_V2, S_COND, S_NARR, S_TARGET, S_TARGET2, S_FHIR, S_DT, S_VOCAB, S_ASSIGN = 1, 3, 6, 8, 9, 10, 11, 14, 15, 16


def map_name(file: Path) -> str:
    """The map name in a CSV file name: between 'R4_ ' or 'Map_ ' and the last ' - '."""
    stem = file.stem
    start = stem.index("_ ") + 2
    return stem[start:stem.rindex(" - ")].strip()


# ---------------------------------------------------------------------------------------------- reading


class Generator:
    """One run: reads the CSVs under `root`, collects the data and the skipped rows."""

    def __init__(self, root: Path):
        self.root = root
        self.skipped: list[dict] = []
        self.applied: list[dict] = []
        self.index: dict[str, dict[str, tuple[str, Path]]] = {}
        for folder in ("messages", "segments", "datatypes", "codesystems"):
            self.index[folder] = {}
            for file in sorted((root / folder).glob("*.csv")):
                self.index[folder][norm(map_name(file))] = (map_name(file), file)
        self.used_overrides: set[int] = set()

    def rel(self, file: Path) -> str:
        return file.relative_to(self.root).as_posix()

    def rows(self, file: Path) -> list[tuple[int, list[str]]]:
        """(record number, cells) for the data rows (from record 3), with the overrides applied."""
        with open(file, encoding="utf-8", newline="") as handle:
            records = list(csv.reader(handle))
        rel = self.rel(file)
        out: list[tuple[int, list[str]]] = []
        for number, cells in enumerate(records, 1):
            if number < 3:
                continue
            cells = cells + [""] * (20 - len(cells))
            keep = True
            added: list[list[str]] = []
            for k, ov in enumerate(overrides.OVERRIDES):
                if ov.file != rel or ov.row != number:
                    continue
                for col, text in ov.expect.items():
                    if cells[col] != text:
                        raise SystemExit(f"override for {rel}:{number} expects column {col} = {text!r}, "
                                         f"found {cells[col]!r}: review overrides.py against the new IG")
                self.used_overrides.add(k)
                self.applied.append({"src": f"{rel}:{number}", "why": ov.why})
                if ov.drop:
                    keep = False
                    self.skipped.append({"src": f"{rel}:{number}", "why": "override: " + ov.why})
                cells = list(cells)
                for col, text in ov.set.items():
                    cells[col] = text
                for extra in ov.add:
                    row = list(cells)
                    for col, text in extra.items():
                        row[col] = text
                    added.append(row)
            if keep:
                out.append((number, cells))
            out.extend((number, row) for row in added)
        return out

    def skip(self, src: str, why: str, text: str | None = None) -> None:
        entry = {"src": src, "why": why}
        if text:
            entry["text"] = text
        self.skipped.append(entry)

    def resolve(self, folder: str, name: str) -> str:
        key = norm(name)
        if key not in self.index[folder]:
            raise Unparsed(f"unknown {folder[:-1]} map {name!r}")
        return self.index[folder][key][0]

    # -- events ------------------------------------------------------------------------------------------

    def structures_of_events(self) -> dict[str, str]:
        _, file = self.index["codesystems"][norm("MessageStructure")]
        by_event: dict[str, str] = {}
        for _number, cells in self.rows(file):
            structure, text = cells[0].strip(), cells[1]
            for event in re.split(r"[,\s]+", text.strip()):
                if re.fullmatch(r"[A-Z]\d\d", event):
                    by_event.setdefault(structure.split("_")[0] + "^" + event, structure)
        return by_event

    def events(self) -> dict[str, dict]:
        by_event = self.structures_of_events()
        out: dict[str, dict] = {}
        for key in EVENTS:
            structure = by_event.get(key)
            if structure is None:
                raise SystemExit(f"{key}: not in table 0354 (MessageStructure)")
            entry: dict[str, Any] = {"structure": structure, "tree": structure,
                                     "map": structure if norm(structure) in self.index["messages"] else None}
            entry.update(overrides.EVENTS.get(key, {}))
            out[key] = entry
        return out

    # -- messages ----------------------------------------------------------------------------------------

    def message(self, name: str) -> tuple[list, list[dict]]:
        canonical, file = self.index["messages"][norm(name)]
        rel = self.rel(file)
        tree: list = []
        stack: list[list] = [tree]
        last_id = None
        rules: list[dict] = []
        rows = self.rows(file)
        alternatives = narrative_alternatives([(c[M_ORDER] + c[M_ID], c[M_COND], c[M_NARR]) for _, c in rows])
        for number, cells in rows:
            src = f"{rel}:{number}"
            ident = cells[M_ID].strip()
            if not ident:
                continue
            if cells[M_ORDER] + ident in alternatives and is_narrative_condition(cells[M_COND], cells[M_NARR]):
                self.skip(src, "narrative condition (alternatives the generator cannot decide)", cells[M_NARR].strip())
                continue
            if ident != last_id:
                last_id = ident
                self.tree_row(ident, cells, stack)
            if cells[M_TARGET].strip() or cells[M_MAP].strip():
                try:
                    rules.append(self.message_rule(cells, ident, src))
                except Unparsed as exc:
                    self.skip(src, str(exc), cells[M_COND] or cells[M_TARGET] or cells[M_MAP])
        return tree, rules

    @staticmethod
    def cardinality(cells: list[str]) -> tuple[int, int]:
        syntax = cells[M_SYNTAX]
        low = int(cells[M_MIN]) if cells[M_MIN].strip().lstrip("-").isdigit() else (0 if "[" in syntax else 1)
        high = int(cells[M_MAX]) if cells[M_MAX].strip().lstrip("-").isdigit() else (-1 if "{" in syntax else 1)
        return low, high

    def tree_row(self, ident: str, cells: list[str], stack: list[list]) -> None:
        if ident.startswith("/"):
            if len(stack) > 1:
                stack.pop()
            return
        head, _, last = ident.rpartition(".")
        low, high = self.cardinality(cells)
        if "begin" in cells[M_NAME]:
            group: dict[str, Any] = {"group": last, "min": low, "max": high, "items": []}
            stack[-1].append(group)
            stack.append(group["items"])
            return
        item: dict[str, Any] = {"seg": last, "min": low, "max": high}
        if ":follow:" in head:
            item["follow"] = head.split(":follow:")[1]
        stack[-1].append(item)

    def message_rule(self, cells: list[str], ident: str, src: str) -> dict:
        head, _, _ = ident.partition(":follow:")
        parts = ident.split(".")
        if ":follow:" in ident:
            path = [parts[-1]]
        else:
            path = parts[1:]
        rule: dict[str, Any] = {"order": cells[M_ORDER].strip(), "path": path}
        if ":follow:" in ident:
            rule["follow"] = ident.split(":follow:")[1].split(".")[0]
        when = parse_condition(cells[M_COND], path[-1])
        if when:
            rule["when"] = when
        if is_narrative_condition(cells[M_COND], cells[M_NARR]):
            rule["note"] = cells[M_NARR].strip()
        target = cells[M_TARGET].strip()
        if target:
            rule["target"] = self.message_target(target)
        if cells[M_MAP].strip():
            rule["map"] = self.resolve("segments", cells[M_MAP].strip())
        links = self.links(cells[M_REFS], src)
        if links:
            rule["links"] = links
        rule["src"] = src
        return rule

    def message_target(self, text: str) -> dict:
        assign = None
        if "=" in text:
            text, _, value = text.partition("=")
            assign = parse_assignment(value.strip().rstrip("'") if value.strip().endswith("'\"") else value)
        m = re.fullmatch(r"([A-Z][A-Za-z]*)(?:\[([^\]]+)\])?(?:\.(.+))?", text.strip())
        if not m:
            raise Unparsed(f"unparsed target {text!r}")
        target: dict[str, Any] = {"type": m.group(1)}
        if m.group(2):
            target["n"] = int(m.group(2)) if m.group(2).isdigit() else m.group(2)
        if m.group(3):
            target["path"] = parse_path(m.group(3))
        if assign:
            target["assign"] = assign
        return target

    LINK = re.compile(r"^(?P<ft>[A-Z]\w*)(?:\[(?P<fn>[^\]]+)\])?\.(?P<path>[a-z][\w.\[\]]*?)"
                      r"(?:\.reference)?=(?P<tt>[A-Z]\w*)(?:\[(?P<tn>[^\]]+)\])?\.id$")
    LINK_CONST = re.compile(r'^(?P<ft>[A-Z]\w*)(?:\[(?P<fn>[^\]]+)\])?\.(?P<path>[a-z][\w.\[\]]*?)="(?P<value>[^"]*)"$')

    def links(self, text: str, src: str) -> list[dict]:
        out = []
        for item in re.split(r"[;\n]+", text):
            item = item.strip()
            if not item:
                continue
            m = self.LINK.match(item)
            if m:
                out.append({"from": ref_of(m.group("ft"), m.group("fn")), "path": m.group("path"),
                            "to": ref_of(m.group("tt"), m.group("tn"))})
                continue
            m = self.LINK_CONST.match(item)
            if m:
                out.append({"from": ref_of(m.group("ft"), m.group("fn")), "path": m.group("path"),
                            "const": m.group("value")})
                continue
            self.skip(src, "unparsed reference", item)
        return out

    # -- segments and data types -------------------------------------------------------------------------

    def field_rules(self, folder: str, name: str) -> tuple[str, list[dict]]:
        canonical, file = self.index[folder][norm(name)]
        rel = self.rel(file)
        datatype = canonical.split("[")[0] if folder == "datatypes" else None
        rules = []
        rows = self.rows(file)
        alternatives = narrative_alternatives([(cells[S_ID].strip(), cells[S_COND], cells[S_NARR]) for _, cells in rows])
        for number, cells in rows:
            src = f"{rel}:{number}"
            if cells[S_ID].strip() in alternatives and is_narrative_condition(cells[S_COND], cells[S_NARR]):
                self.skip(src, "narrative condition (alternatives the generator cannot decide)", cells[S_NARR].strip())
                continue
            target = cells[S_TARGET].strip() or cells[S_TARGET2].strip()
            dt, assign = cells[S_DT].strip(), cells[S_ASSIGN].strip()
            if not (target or dt or assign):
                continue  # a field the IG leaves unmapped
            try:
                rules.append(self.field_rule(cells, target, datatype, src))
            except Unparsed as exc:
                self.skip(src, str(exc), cells[S_COND].strip() or target or assign)
        return rel, rules

    def field_rule(self, cells: list[str], target: str, datatype: str | None, src: str) -> dict:
        ident = cells[S_ID].strip()
        rule: dict[str, Any] = {}
        if ident in ("", datatype) or re.fullmatch(r"[A-Z][A-Z0-9]{2}", ident):
            pass  # a row for the whole segment or value (constants such as ServiceRequest.intent)
        elif datatype is None:
            m = re.fullmatch(r"[A-Z][A-Z0-9]{2}-(\d+)(?:\.(\d+))?", ident)
            if not m:
                raise Unparsed(f"unparsed field identifier {ident!r}")
            rule["field"] = int(m.group(1))
            if m.group(2):
                rule["comp"] = int(m.group(2))
        else:
            m = re.fullmatch(r"[A-Z]{2,3}[.-](\d+)(?:\.(\d+))?", ident)  # 'FT-1' means FT.1 (repair)
            if not m:
                raise Unparsed(f"unparsed component identifier {ident!r}")
            rule["comp"] = int(m.group(1))
            if m.group(2):
                rule["sub"] = int(m.group(2))
        if cells[S_V2].strip():
            rule["v2"] = cells[S_V2].strip()
        when = parse_condition(cells[S_COND], ident or datatype or "", datatype)
        if when:
            rule["when"] = when
        if is_narrative_condition(cells[S_COND], cells[S_NARR]):
            rule["note"] = cells[S_NARR].strip()
        if "??" in target or "extention" in target:
            raise Unparsed("undefined extension")
        assign_text = cells[S_ASSIGN]
        if "=" in target and "(" not in target:
            target, _, assign_text = target.partition("=")
        if datatype is not None:
            target = re.sub(r"^[A-Z][A-Za-z]*\.", "", target.strip())  # 'Quantity.unit' in CWE[Quantity] (repair)
        rule["path"] = parse_path(target, relative=datatype is not None)
        if cells[S_FHIR].strip():
            rule["fhir"] = cells[S_FHIR].strip()
        if cells[S_DT].strip():
            rule["dt"] = self.resolve("datatypes", cells[S_DT].strip())
        if cells[S_VOCAB].strip():
            rule["vocab"] = norm(self.resolve("codesystems", cells[S_VOCAB].strip()))
        assign = parse_assignment(assign_text)
        if assign:
            rule["assign"] = assign
        if not (rule["path"] or rule.get("dt") or assign) and target not in ("$this", "$value"):
            raise Unparsed("no target")
        rule["src"] = src
        return rule

    # -- vocabulary ----------------------------------------------------------------------------------------

    def vocabulary(self, key: str, tables: dict) -> dict:
        canonical, file = self.index["codesystems"][key]
        rel = self.rel(file)
        with open(file, encoding="utf-8", newline="") as handle:
            header = next(iter(list(csv.reader(handle))[1:2]), [])
        narrative = header.index("Narrative") if "Narrative" in header else 5
        code_col = header.index("Code", narrative)
        display_col = header.index("Display", code_col) if "Display" in header[code_col:] else code_col + 2
        display_col = overrides.VOCABULARY_DISPLAY_COLUMN.get(canonical, (display_col, ""))[0]
        system_col = header.index("Code System", code_col)
        codes: dict[str, dict] = {}
        target_only: list[int] = []
        for number, cells in self.rows(file):
            src = f"{rel}:{number}"
            code = cells[0].strip()  # strip() also drops the NO-BREAK SPACE in '<\xa0' (repair)
            if not code:
                if cells[code_col].strip():
                    target_only.append(number)
                continue
            if cells[3].strip():
                self.skip(src, "condition in a vocabulary map (not computable)", cells[3].strip())
                continue
            if code in codes:
                self.skip(src, "duplicate v2 code (the first row wins)", code)
                continue
            fhir = cells[code_col].strip()
            entry: dict[str, Any] = {"code": fhir or None}
            if fhir:
                if cells[display_col].strip():
                    entry["display"] = cells[display_col].strip()
                if cells[system_col].strip():
                    entry["system"] = cells[system_col].strip()
            entry["src"] = src
            codes[code] = entry
        if target_only:
            self.skip(f"{rel}:{target_only[0]}", f"{len(target_only)} FHIR-only rows (no v2 code), rows "
                      f"{target_only[0]}-{target_only[-1]}")
        out: dict[str, Any] = {"name": canonical, "src": rel, "codes": codes}
        if tables.get(key, {}).get("table"):
            out["table"] = tables[key]["table"]
        return out

    def tables(self) -> dict:
        with open(self.root / "v2-to-FHIR Map Inventory - Code System.csv", encoding="utf-8", newline="") as handle:
            records = list(csv.reader(handle))
        out: dict[str, dict] = {}
        for cells in records[1:]:
            if not cells or not cells[0].strip():
                continue
            entry = {"name": cells[0].strip(), "status": cells[2].strip()}
            if cells[1].strip():
                entry["table"] = cells[1].strip()
            out.setdefault(norm(cells[0]), entry)
        return out

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        events = self.events()
        structures: dict[str, list] = {}
        messages: dict[str, list] = {}
        for name in sorted({e["map"] for e in events.values() if e["map"]}):
            structures[name], messages[name] = self.message(name)
        structures.update(overrides.STRUCTURES)
        for entry in events.values():
            if entry["tree"] not in structures:
                raise SystemExit(f"no structure tree for {entry['tree']}")
        segments: dict[str, dict] = {}
        datatypes: dict[str, dict] = {}
        vocab_keys: set[str] = set()
        todo_segments = sorted({r["map"] for rules in messages.values() for r in rules if "map" in r})
        for name in todo_segments:
            rel, rules = self.field_rules("segments", name)
            segments[name] = {"resource": name.split("[")[1].split("-")[0].rstrip("]"), "src": rel, "rules": rules}
        todo = sorted({r["dt"] for s in segments.values() for r in s["rules"] if "dt" in r})
        while todo:
            name = todo.pop(0)
            if name in datatypes:
                continue
            rel, rules = self.field_rules("datatypes", name)
            datatypes[name] = {"src": rel, "rules": rules}
            todo.extend(sorted({r["dt"] for r in rules if "dt" in r} - set(datatypes)))
        for table in (*segments.values(), *datatypes.values()):
            vocab_keys |= {r["vocab"] for r in table["rules"] if "vocab" in r}
        tables = self.tables()
        vocabulary = {key: self.vocabulary(key, tables) for key in sorted(vocab_keys | overrides.EXTRA_VOCABULARY)}
        unused = [overrides.OVERRIDES[k] for k in range(len(overrides.OVERRIDES)) if k not in self.used_overrides]
        if unused:
            raise SystemExit(f"overrides that matched no row: {[(o.file, o.row) for o in unused]}")
        return {"events.json": events, "structures.json": structures, "messages.json": messages,
                "segments.json": segments, "datatypes.json": datatypes, "vocabulary.json": vocabulary,
                "tables.json": tables, "skipped.json": self.skipped, "overrides.json": self.applied}


def is_narrative_condition(condition: str, narrative: str) -> bool:
    """A row whose only condition is prose ('If in the US…')."""
    return not condition.strip() and narrative.strip().lower().startswith("if")


def narrative_alternatives(rows: list[tuple[str, str, str]]) -> set[str]:
    """Identifiers with two or more different prose conditions: exclusive alternatives no program can choose."""
    seen: dict[str, set[str]] = {}
    for ident, condition, narrative in rows:
        if is_narrative_condition(condition, narrative):
            seen.setdefault(ident, set()).add(narrative.strip())
    return {ident for ident, texts in seen.items() if len(texts) > 1}


def ref_of(type_: str, n: str | None) -> dict:
    out: dict[str, Any] = {"type": type_}
    if n:
        out["n"] = int(n) if n.isdigit() else n
    return out


def generate(mappings: Path, out: Path = DATA) -> dict[str, Any]:
    """Read the CSVs under `mappings` and write the data files into `out`; returns what was written."""
    files = Generator(mappings).run()
    out.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        with open(out / name, "w", encoding="utf-8", newline="\n") as handle:
            json.dump(value, handle, indent=1, sort_keys=True, ensure_ascii=True)
            handle.write("\n")
    return files


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    files = generate(Path(args[0]) if args else DEFAULT_MAPPINGS)
    print(f"{len(files['messages.json'])} message maps, {len(files['segments.json'])} segment maps, "
          f"{len(files['datatypes.json'])} data type maps, {len(files['vocabulary.json'])} vocabularies, "
          f"{len(files['skipped.json'])} skipped")


if __name__ == "__main__":
    main()
