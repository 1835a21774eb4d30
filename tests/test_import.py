"""`hearth import` (server/load.py): NDJSON and Bundles, compressed or not, errors reported, totals exact."""

from __future__ import annotations

import bz2
import gzip
import io
import json
from pathlib import Path

import pytest

from hearth.capability.outcome import FhirError
from conftest import SYNTHEA, make_store, synthea_bundle
from hearth.server.cli import main
from hearth.interactions import crud
from hearth.interactions.context import Context
from hearth.server.load import Loader, find_files
from hearth.server.progress import ProgressBar
from hearth.server.settings import Settings
from hearth.server.wiring import close_context, open_context

BASE = "http://hearth.test/fhir"


def patient(number: int, **extra) -> dict:
    return {"resourceType": "Patient", "id": f"p{number}", "name": [{"family": f"Family{number}"}], **extra}


def observation(number: int) -> dict:
    return {"resourceType": "Observation", "id": f"o{number}", "status": "final",
            "code": {"text": "weight"}, "valueQuantity": {"value": 72.50, "unit": "kg"}}


def ndjson(resources: list) -> str:
    return "".join(json.dumps(resource) + "\n" for resource in resources)


@pytest.fixture
async def ctx(backend: str, tmp_path: Path):
    context, subscriptions = await open_context(Settings(base_url=BASE), make_store(backend, tmp_path))
    yield context
    await close_context(context, subscriptions)


async def load(ctx: Context, *paths: Path, **options):
    return await Loader(ctx, **options).load(find_files(paths))


async def test_ndjson_plain_and_gzip(ctx, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text(ndjson([patient(n) for n in range(5)]))
    # 72.50 must survive as written: write the literal, not a float
    lines = ndjson([observation(n) for n in range(3)]).replace("72.5,", "72.50,")
    (folder / "Observation.ndjson.gz").write_bytes(gzip.compress(lines.encode()))
    (folder / "notes.txt").write_text("not loaded")
    report = await load(ctx, folder)
    assert report.errors == []
    assert report.files == 2
    assert dict(report.counts) == {"Patient": 5, "Observation": 3}
    assert report.resources == 8
    stored = await crud.read(ctx, "Observation", "o2")
    assert b'"value":72.50' in stored.body
    assert (await crud.read(ctx, "Patient", "p4")).version_id == 1


async def test_collection_bundle_bz2_keeps_ids(ctx, tmp_path):
    source = synthea_bundle("057aa36e")
    resources = [entry["resource"] for entry in source["entry"][:60]]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    path = tmp_path / "collection.json.bz2"
    path.write_bytes(bz2.compress(json.dumps(bundle).encode()))
    report = await load(ctx, path)
    assert report.errors == []
    expected: dict[str, int] = {}
    for resource in resources:
        expected[resource["resourceType"]] = expected.get(resource["resourceType"], 0) + 1
    assert dict(report.counts) == expected
    first = resources[0]
    stored = await crud.read(ctx, first["resourceType"], first["id"])
    assert json.loads(stored.body)["id"] == first["id"]


async def test_errors_are_reported_and_the_rest_loads(ctx, tmp_path):
    good = [patient(1), patient(2)]
    lines = [json.dumps(good[0]), "{not json", json.dumps({"resourceType": "Patient", "id": "bad", "gender": 7}),
             json.dumps({"resourceType": "NoSuchType", "id": "x"}), "", json.dumps(good[1])]
    (tmp_path / "mixed.ndjson").write_text("\n".join(lines) + "\n")
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": observation(1)}, {"fullUrl": "urn:uuid:1"}, {"resource": observation(2)}]}
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    (tmp_path / "broken.ndjson.gz").write_bytes(b"this is not gzip")
    (tmp_path / "search.json").write_text(json.dumps({"resourceType": "Bundle", "type": "searchset"}))
    report = await load(ctx, tmp_path)
    assert dict(report.counts) == {"Patient": 2, "Observation": 2}
    assert report.files == 4
    where = {(Path(error.file).name, error.where) for error in report.errors}
    assert where == {("mixed.ndjson", "line 2"), ("mixed.ndjson", "line 3"), ("mixed.ndjson", "line 4"),
                     ("bundle.json", "entry[1]"), ("broken.ndjson.gz", ""), ("search.json", "")}
    messages = {error.where: error.message for error in report.errors if error.file.endswith("mixed.ndjson")}
    assert "not valid JSON" in messages["line 2"]
    assert "gender" in messages["line 3"]
    assert "NoSuchType" in messages["line 4"]
    assert any(error.file.endswith("search.json") and "searchset" in error.message for error in report.errors)
    summary = report.summary()
    assert "Loaded 4 resources from 4 files" in summary and "mixed.ndjson line 3:" in summary


async def test_writes_to_one_resource_keep_file_order(ctx, tmp_path):
    versions = [patient(1, gender=gender) for gender in ("male", "female", "other", "unknown")]
    (tmp_path / "versions.ndjson").write_text(ndjson([*versions, patient(2)]))
    report = await load(ctx, tmp_path, window=8)
    assert report.counts["Patient"] == 5
    stored = await crud.read(ctx, "Patient", "p1")
    assert stored.version_id == 4
    assert json.loads(stored.body)["gender"] == "unknown"


async def test_batch_bundle_entries_each_reported(ctx, tmp_path):
    organization = {"resourceType": "Organization", "identifier": [{"system": "urn:test", "value": "org-1"}],
                    "name": "Hospital"}
    conditional = {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:test|org-1"}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(7), "request": {"method": "PUT", "url": "Patient/p7"}},
        {"resource": organization, "request": conditional},
        {"resource": {**patient(8), "gender": 7}, "request": {"method": "PUT", "url": "Patient/p8"}}]}
    (tmp_path / "0-batch.json").write_text(json.dumps(bundle))
    report = await load(ctx, tmp_path)
    assert dict(report.counts) == {"Patient": 1, "Organization": 1}
    assert [(error.where, "gender" in error.message) for error in report.errors] == [("entry[2]", True)]
    assert (await crud.read(ctx, "Patient", "p7")).version_id == 1
    again = await load(ctx, tmp_path)  # ifNoneExist: the Organization is found, not created twice
    assert again.counts["Organization"] == 0 and again.existing == 1
    assert again.counts["Patient"] == 1  # PUT writes version 2


# mongomock has no transactions: there a transaction Bundle is refused (as designed), so these run on SQLite
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_transaction_all_or_nothing(ctx, tmp_path):
    def transaction(*entries):
        return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}
    new_patient = {"fullUrl": "urn:uuid:0d2d5a4e-6a5e-4b5e-9a77-1d1c7b1c0001",
                   "resource": {"resourceType": "Patient", "gender": "female"},
                   "request": {"method": "POST", "url": "Patient"}}
    weight = {**observation(9), "subject": {"reference": "urn:uuid:0d2d5a4e-6a5e-4b5e-9a77-1d1c7b1c0001"}}
    good = transaction(new_patient, {"resource": weight, "request": {"method": "PUT", "url": "Observation/o9"}})
    bad = transaction({"resource": patient(3), "request": {"method": "PUT", "url": "Patient/p3"}},
                      {"resource": {**patient(4), "gender": 7}, "request": {"method": "PUT", "url": "Patient/p4"}})
    (tmp_path / "good.json.gz").write_bytes(gzip.compress(json.dumps(good).encode()))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    report = await load(ctx, tmp_path)
    assert dict(report.counts) == {"Patient": 1, "Observation": 1}
    assert [(Path(error.file).name, error.where) for error in report.errors] == [("bad.json", "entry[1]")]
    assert "transaction not loaded" in report.errors[0].message
    stored = json.loads((await crud.read(ctx, "Observation", "o9")).body)
    assert stored["subject"]["reference"].startswith("Patient/")  # the urn:uuid became the new Patient's id
    with pytest.raises(FhirError):  # nothing of the failed transaction was written
        await crud.read(ctx, "Patient", "p3")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_synthea_batches_first_then_transactions(ctx, tmp_path):
    """Synthea: the 0- batch bundles must load first, since the transactions reference them conditionally."""
    folder = tmp_path / "synthea"
    folder.mkdir()
    for name in ("0-hospitalInformation", "0-practitionerInformation", "8a4c9c04", "6c8f3e83"):
        source = next(SYNTHEA.glob(f"{name}*.json.bz2"))
        (folder / source.name).symlink_to(source)
    expected: dict[str, int] = {}
    for source in folder.iterdir():
        for entry in json.loads(bz2.decompress(source.read_bytes()))["entry"]:
            kind = entry["resource"]["resourceType"]
            expected[kind] = expected.get(kind, 0) + 1
    report = await load(ctx, folder, concurrency=2)
    assert report.errors == []
    assert dict(report.counts) == expected
    assert report.resources == sum(expected.values())


def test_find_files_loads_0_files_first(tmp_path):
    for name in ("b.json", "0-z.json.bz2", "a.ndjson", "0-a.json", "skip.csv"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl.gz").write_text("")
    assert [path.name for path in find_files([tmp_path])] == ["0-a.json", "0-z.json.bz2", "a.ndjson", "b.json",
                                                              "c.jsonl.gz"]
    with pytest.raises(FileNotFoundError):
        find_files([tmp_path / "missing"])


def test_cli_import_prints_summary_and_exit_code(tmp_path, capsys):
    (tmp_path / "Patient.ndjson").write_text(ndjson([patient(n) for n in range(3)]))
    database = str(tmp_path / "cli.db")
    assert main(["import", str(tmp_path / "Patient.ndjson"), "--storage", database]) == 0
    output = capsys.readouterr()
    assert "Loaded 3 resources from 1 files" in output.out
    assert "Patient" in output.out
    assert output.err.count("\r") == 0  # not a terminal: no progress bar
    (tmp_path / "bad.ndjson").write_text("{oops\n")
    assert main(["import", str(tmp_path / "bad.ndjson"), "--storage", database]) == 1
    assert "bad.ndjson line 1: not valid JSON" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "nowhere"), "--storage", database]) == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_in_place_only_on_a_terminal():
    terminal = _Terminal()
    bar = ProgressBar(200, terminal)
    bar.advance(100, "half")
    bar.advance(100, "all")  # within the redraw interval: not drawn until close()
    assert "all" not in terminal.getvalue()
    bar.close()
    assert terminal.getvalue().startswith("\r[")
    assert " 50% half" in terminal.getvalue() and "100% all" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    quiet = io.StringIO()
    bar = ProgressBar(10, quiet)
    bar.advance(10, "done")
    bar.close()
    assert quiet.getvalue() == ""


async def test_an_import_indexes_for_the_custom_search_parameters_stored_before(backend, tmp_path):
    """`hearth import` runs on the server's wiring: SearchParameters stored earlier (by another process) are loaded,
    so what it imports is indexed for them."""
    from test_subscriptions_delivery import shared_stores
    from hearth.interactions.dispatcher import dispatch
    from hearth.interactions.reindex_worker import Reindexer
    from hearth.interactions.request import Request

    earlier, importing = shared_stores(backend, tmp_path)
    settings = Settings(base_url=BASE)
    server, subscriptions = await open_context(settings, earlier)
    parameter = {"resourceType": "SearchParameter", "url": "http://example.org/sp/eye-colour", "name": "eye-colour",
                 "status": "active", "description": "Eye colour", "code": "eye-colour", "base": ["Patient"],
                 "type": "string", "expression": "Patient.extension.where(url='http://example.org/eye').value"}
    await dispatch(server, Request("create", type="SearchParameter", body=parameter))
    await close_context(server, subscriptions)
    context, subscriptions = await open_context(settings, importing)
    try:
        eyes = patient(1, extension=[{"url": "http://example.org/eye", "valueString": "green"}])
        (tmp_path / "eyes.ndjson").write_text(ndjson([eyes, patient(2)]))
        assert not (await load(context, tmp_path / "eyes.ndjson")).errors
        await Reindexer(context, page=500, lease=30.0, interval=3600).step()  # a server's worker: searchable now
        found = await dispatch(context, Request("search-type", type="Patient", params=(("eye-colour", "green"),),
                                                strict=True))
        assert [e["resource"]["id"] for e in json.loads(found.body)["entry"]] == ["p1"]
    finally:
        await close_context(context, subscriptions)
