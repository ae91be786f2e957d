"""The batch job on real LDC slides and on every kind of bad file."""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LDC_SAMPLES, ROOT

from imagezoo.batch import discover, output_schema, run_job
from imagezoo.batch.items import Preprocessor
from imagezoo.data.voc import read_voc
from imagezoo.images import load_image
from imagezoo.inference import ImageClassifier
from imagezoo.viability import score_boxes

pytestmark = pytest.mark.slow
JOB = [sys.executable, str(ROOT / "jobs" / "batch_predict.py")]


def read_rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def key(row: dict) -> tuple:
    return row["path"], -1 if row["box_index"] is None else row["box_index"]


KILLER = "nested/killer.png"


class KilledOnKiller(Preprocessor):
    """Decoding ``KILLER`` ends the worker with SIGKILL, as the kernel's out-of-memory killer would."""

    def __call__(self, name: str):
        if name == KILLER:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(name)


@pytest.fixture()
def slides(tmp_path, ldc_sample_dir, bad_files):
    """Real slides of every mode (with their XML) plus every kind of bad file, nested."""
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    (folder / "nested" / "deeper").mkdir(parents=True)
    for kind, path in bad_files.items():
        if kind != "good":
            shutil.copy(path, folder / "nested" / "deeper" / path.name)
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    os.mkfifo(folder / "nested" / "pipe")  # opening it would wait for a writer forever
    return folder


def test_every_file_gets_a_row_and_bad_ones_an_error(trained_model, slides, tmp_path):
    out = tmp_path / "out.parquet"
    summary = run_job(slides, str(trained_model), out, progress=False)
    rows = {r["path"]: r for r in read_rows(out)}
    assert set(rows) == set(discover(slides).names) and ".DS_Store" not in rows
    assert not any(p.endswith(".xml") for p in rows), "VOC sidecars are annotations, not inputs"
    bad = {"truncated.png": "truncated", "corrupt.png": "corrupt", "empty.png": "0 bytes",
           "notes.png": "not a recognised image", "bomb.png": "too large", "pipe": "not a regular file"}
    for name, message in bad.items():
        row = rows[f"nested/{name}" if name == "pipe" else f"nested/deeper/{name}"]
        assert message in row["error"] and row["label"] is None and row["width"] is None
        assert str(tmp_path) not in row["error"], "errors name files relative to --dir"
    for name in [*LDC_SAMPLES.values(), "nested/deeper/slide_without_extension"]:
        row = rows[name]
        assert row["error"] is None and row["label"] in {"dead", "live"}
        assert row["prob_dead"] + row["prob_live"] == pytest.approx(1.0, abs=1e-5)
        assert row["score"] == max(row["prob_dead"], row["prob_live"])
        assert (row["width"], row["height"]) == load_image(slides / name).size
        assert row["sha256"] == hashlib.sha256((slides / name).read_bytes()).hexdigest()
    assert summary.errors == len(bad) and summary.scored == len(LDC_SAMPLES) + 1
    assert pq.read_schema(out).equals(output_schema(["dead", "live"]), check_metadata=False)
    assert not list(tmp_path.glob("out.parquet.*")), "no temp file or parts left behind"


def test_scores_match_the_model_used_directly(trained_model, slides, tmp_path):
    out = tmp_path / "out.parquet"
    run_job(slides, str(trained_model), out, progress=False, num_workers=0)
    classifier = ImageClassifier.from_pretrained(str(trained_model))
    names = list(LDC_SAMPLES.values())
    expected = classifier.predict([slides / n for n in names])
    rows = {r["path"]: r for r in read_rows(out)}
    for name, probs in zip(names, expected):
        assert rows[name]["prob_live"] == pytest.approx(probs["live"], abs=1e-5)


def test_worker_replicas_give_the_same_rows_as_one_process(trained_model, slides, tmp_path):
    """Forked single-threaded replicas, a spawned two-thread replica and the main process agree."""
    runs = {}
    for workers, threads in [(0, None), (2, 1), (1, 2)]:
        out = tmp_path / f"{workers}-{threads}.parquet"
        run_job(slides, str(trained_model), out, boxes="voc", batch_size=4, num_workers=workers, threads=threads, progress=False)
        runs[workers, threads] = sorted(read_rows(out), key=key)
    reference = runs.pop((0, None))
    for rows in runs.values():
        assert [key(r) for r in rows] == [key(r) for r in reference]
        for row, expected in zip(rows, reference):
            floats = sorted(k for k, v in expected.items() if isinstance(v, float))
            assert {k: v for k, v in row.items() if k not in floats} == {k: v for k, v in expected.items() if k not in floats}
            assert [row[k] for k in floats] == pytest.approx([expected[k] for k in floats], abs=1e-5)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_replicas_follow_the_cpus_the_job_may_use():
    def pin_to_first_cpu():
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    code = "from imagezoo.batch import available_cpus; print(available_cpus())"
    pinned = subprocess.run([sys.executable, "-c", code], preexec_fn=pin_to_first_cpu, capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "1"


def test_boxes_voc_scores_each_cell_like_the_space(trained_model, ldc_sample_dir, tmp_path):
    out = tmp_path / "cells.parquet"
    run_job(ldc_sample_dir, str(trained_model), out, boxes="voc", progress=False)
    rows = read_rows(out)
    classifier = ImageClassifier.from_pretrained(str(trained_model))
    for name in LDC_SAMPLES.values():
        boxes = read_voc((ldc_sample_dir / name).with_suffix(".xml"))
        per_box = sorted((r for r in rows if r["path"] == name and r["box_index"] is not None), key=key)
        summary = [r for r in rows if r["path"] == name and r["box_index"] is None]
        assert len(per_box) == len(boxes) and len(summary) == 1
        assert [r["box_label"] for r in per_box] == [b.name for b in boxes]
        assert [(r["box_xmin"], r["box_ymin"], r["box_xmax"], r["box_ymax"]) for r in per_box] == [
            (b.xmin, b.ymin, b.xmax, b.ymax) for b in boxes
        ]
        direct = score_boxes(classifier, load_image(ldc_sample_dir / name), boxes)
        assert [r["label"] for r in per_box] == [s.label for s in direct]
        n_live = sum(r["label"] == "live" for r in per_box)
        assert summary[0]["n_objects"] == len(boxes)
        assert summary[0]["n_live"] == n_live and summary[0]["n_dead"] == len(boxes) - n_live
        if boxes:
            assert summary[0]["viability"] == pytest.approx(n_live / len(boxes))
        else:
            assert summary[0]["viability"] is None


def test_empty_folder_is_a_clear_error(trained_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no files to score"):
        run_job(empty, str(trained_model), tmp_path / "out.parquet", progress=False)
    result = subprocess.run([*JOB, "--dir", str(empty), "--model", str(trained_model), "--out", str(tmp_path / "o.parquet")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no files to score" in result.stderr



def test_a_file_name_that_is_not_utf8_is_scored_and_resumed(trained_model, ldc_sample_dir, tmp_path):
    """Arrow stores UTF-8 only: a Latin-1 name (b"caf\\xe9") stopped the whole job when its part was written."""
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    latin1 = os.fsdecode(b"caf\xe9.png")
    shutil.copy(folder / LDC_SAMPLES["RGB"], folder / latin1)
    out = tmp_path / "out.parquet"
    run_job(folder, str(trained_model), out, progress=False)
    rows = {r["path"]: r for r in read_rows(out)}
    assert rows["caf\\xe9.png"]["error"] is None
    assert rows["caf\\xe9.png"]["prob_live"] == rows[LDC_SAMPLES["RGB"]]["prob_live"]
    summary = run_job(folder, str(trained_model), out, resume=True, progress=False)
    assert summary.skipped == summary.files == len(LDC_SAMPLES) + 1 and len(read_rows(out)) == summary.files


def test_an_error_that_names_a_file_that_is_not_utf8_is_stored(trained_model, ldc_sample_dir, tmp_path):
    """A cut-off XML beside b"caf\\xe9.png": its error quoted the path with surrogates, Arrow could not
    store the part, and the job ended with no output (a review, 2026-12-03)."""
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    latin1 = os.fsdecode(b"caf\xe9")
    shutil.copy(folder / LDC_SAMPLES["RGB"], folder / f"{latin1}.png")
    (folder / f"{latin1}.xml").write_text("<annotation><object><name>live</name><bndbox>")
    out = tmp_path / "out.parquet"
    summary = run_job(folder, str(trained_model), out, boxes="voc", progress=False, num_workers=0)
    rows = read_rows(out)
    failed = [row for row in rows if row["error"] is not None]
    assert [row["path"] for row in failed] == ["caf\\xe9.png"] and "caf\\xe9.xml" in failed[0]["error"]
    assert summary.scored == len(LDC_SAMPLES) and {row["path"] for row in rows} >= set(LDC_SAMPLES.values())


def test_a_sidecar_that_is_not_the_slides_annotation_is_its_error(trained_model, ldc_sample_dir, tmp_path):
    """An HTML page named like the slide read as "no cell"; a slide's boxes on a resized copy of it were
    scored where they do not lie."""
    folder = tmp_path / "slides"
    folder.mkdir()
    source = ldc_sample_dir / LDC_SAMPLES["RGB"]
    shutil.copy(source, folder / "page.png")
    (folder / "page.xml").write_text("<html><body>hello</body></html>")
    load_image(source).resize((40, 40)).save(folder / "small.png")
    shutil.copy(source.with_suffix(".xml"), folder / "small.xml")
    out = tmp_path / "out.parquet"
    run_job(folder, str(trained_model), out, boxes="voc", progress=False, num_workers=0)
    rows = {row["path"]: row for row in read_rows(out)}
    assert "not a Pascal-VOC annotation" in rows["page.png"]["error"]
    assert "not this 40x40 one" in rows["small.png"]["error"]


def test_job_settings_out_of_range_are_refused_before_anything_runs(tmp_path):
    for setting, value in (("batch_size", 0), ("batch_size", -1), ("num_workers", -1), ("rows_per_part", 0)):
        with pytest.raises(ValueError, match=f"--{setting.replace('_', '-')} must be at least"):
            run_job(tmp_path / "absent", "absent-model", tmp_path / "out.parquet", **{setting: value})


def test_an_engine_whose_package_is_missing_is_refused_with_its_install_command(monkeypatch, tmp_path):
    from imagezoo.batch import job

    monkeypatch.setitem(job.ENGINE_NEEDS, "ray", ("imagezoo_no_such_module", 'pip install -e ".[ray]"'))
    with pytest.raises(ValueError, match=r'needs the imagezoo_no_such_module package.*pip install -e "\.\[ray\]"'):
        run_job(tmp_path, "absent-model", tmp_path / "out.parquet", engine="ray")


def test_parts_are_written_as_rows_come_when_they_come_slowly(tmp_path):
    """A part is written once its first row has waited ``part_seconds`` (0 here: every file), and the
    output joins them into row groups of ``rows_per_part``."""
    from imagezoo.batch.output import PartWriter, finalize, parts_dir_for

    schema = output_schema(["dead", "live"])
    out = tmp_path / "out.parquet"
    writer = PartWriter(parts_dir_for(out), schema, rows_per_part=1024, part_seconds=0)
    rows = [{"path": f"{n}.png", "sha256": str(n), "error": None} for n in range(5)]
    for row in rows:
        writer.add([row])
    assert len(writer.written) == 5 and not writer.buffer
    finalize(out, schema, {}, set(), writer.written, rows_per_group=3)
    assert [pq.ParquetFile(out).metadata.row_group(g).num_rows for g in range(2)] == [3, 2]
    assert [row["path"] for row in read_rows(out)] == [row["path"] for row in rows]


def test_sigterm_keeps_the_rows_scored_so_far_for_resume(trained_model, many_slides, tmp_path):
    """``timeout``, Slurm and Kubernetes stop a job with SIGTERM: it ended the process with every row since
    the last part in memory (all of them, under 1024 rows); now it ends as Ctrl-C does."""
    out = tmp_path / "out.parquet"
    args = [*JOB, "--dir", str(many_slides), "--model", str(trained_model), "--out", str(out), "--boxes", "voc",
            "--batch-size", "8", "--num-workers", "1"]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = b""
    while not re.search(rb"\| *([3-9]\d|\d{3,})/\d+ \[", progress):  # tqdm's "| 31/240 [": some files scored
        chunk = job.stderr.read1(4096)
        assert chunk, progress.decode(errors="replace")[-2000:]
        progress += chunk
    job.send_signal(signal.SIGTERM)
    _, rest = job.communicate(timeout=120)
    assert job.returncode == 130, rest.decode(errors="replace")[-2000:]
    parts = list(out.with_name(out.name + ".parts").glob("part-*.parquet"))
    kept = {row["path"] for part in parts for row in pq.read_table(part, columns=["path"]).to_pylist()}
    assert len(kept) >= 30 and not out.exists()
    resumed = subprocess.run([*args, "--resume", "--no-progress"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(kept)} reused from a previous run" in resumed.stderr


def test_an_escaped_name_that_another_file_has_gets_a_name_of_its_own(tmp_path):
    """b"caf\\xe9.png" is written ``caf\\xe9.png``, the name a file may have for real: each keeps its own row."""
    (tmp_path / "caf\\xe9.png").write_bytes(b"literal")
    (tmp_path / os.fsdecode(b"caf\xe9.png")).write_bytes(b"latin-1")
    listing = discover(tmp_path)
    assert listing.names == ["caf\\xe9.png", "caf\\xe9.png (2)"]
    assert [(tmp_path / listing.on_disk.get(name, name)).read_bytes() for name in listing.names] == [b"literal", b"latin-1"]


def test_symlinked_folders_are_followed_once_and_loops_end(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "real" / "a.png").write_bytes(b"a")
    (outside / "b.png").write_bytes(b"b")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    (root / "twice").symlink_to(root / "real", target_is_directory=True)
    assert discover(root).names == ["linked/b.png", "real/a.png"]


def test_a_folder_that_cannot_be_listed_gets_an_error_row(tmp_path, monkeypatch):
    """Root reads every folder whatever its mode, so the refusal another user meets is made here."""
    (tmp_path / "locked").mkdir()
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.png").write_bytes(b"a")
    scandir = os.scandir

    def refuse_locked(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    listing = discover(tmp_path)
    assert listing.names == ["locked/", "open/a.png"]
    item = Preprocessor(str(tmp_path), prepare=None, unlisted=listing.unlisted)("locked/")
    assert item.error == "PermissionError: folder cannot be listed, its files were not scored (Permission denied)"


@pytest.fixture()
def many_slides(tmp_path, ldc_dir):
    folder = tmp_path / "many"
    folder.mkdir()
    for path in sorted(ldc_dir.glob("*.png"))[:240]:
        shutil.copy(path, folder / path.name)
        shutil.copy(path.with_suffix(".xml"), folder / path.with_suffix(".xml").name)
    return folder


def test_resume_after_kill_loses_nothing_and_duplicates_nothing(trained_model, many_slides, tmp_path):
    clean = tmp_path / "clean.parquet"
    run_job(many_slides, str(trained_model), clean, boxes="voc", progress=False)
    out = tmp_path / "killed.parquet"
    args = [*JOB, "--dir", str(many_slides), "--model", str(trained_model), "--out", str(out), "--boxes", "voc",
            "--batch-size", "8", "--rows-per-part", "16", "--num-workers", "1", "--no-progress"]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out.with_name(out.name + ".parts")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.parquet"))) < 6:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not out.exists(), "the output appears only when the job completes"
    n_parts = len(list(parts.glob("*.parquet")))
    assert n_parts >= 6
    rows_before = sum(pq.read_metadata(p).num_rows for p in parts.glob("*.parquet"))

    summary = run_job(many_slides, str(trained_model), out, boxes="voc", resume=True, progress=False)
    assert summary.skipped > 0 and summary.scored < summary.files
    resumed, reference = read_rows(out), read_rows(clean)
    assert len({key(r) for r in resumed}) == len(resumed), "no duplicated rows"
    assert sorted(map(key, resumed)) == sorted(map(key, reference))
    by_key = {key(r): r for r in reference}
    for row in resumed:
        assert row["label"] == by_key[key(row)]["label"]
        if row["prob_live"] is not None:
            assert row["prob_live"] == pytest.approx(by_key[key(row)]["prob_live"], abs=1e-4)
    assert rows_before >= 6 * 16 and not parts.exists()


def test_resume_rescores_changed_files_and_drops_deleted_ones(trained_model, ldc_sample_dir, tmp_path):
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    out = tmp_path / "out.parquet"
    run_job(folder, str(trained_model), out, progress=False)
    first = {r["path"]: r for r in read_rows(out)}
    shutil.copy(folder / LDC_SAMPLES["L"], folder / LDC_SAMPLES["RGB"])  # content changes, name stays
    (folder / LDC_SAMPLES["P"]).unlink()
    summary = run_job(folder, str(trained_model), out, resume=True, progress=False)
    second = {r["path"]: r for r in read_rows(out)}
    assert summary.scored == 1 and summary.skipped == len(LDC_SAMPLES) - 2
    assert LDC_SAMPLES["P"] not in second
    assert second[LDC_SAMPLES["RGB"]]["sha256"] == first[LDC_SAMPLES["L"]]["sha256"]
    assert second[LDC_SAMPLES["L"]] == first[LDC_SAMPLES["L"]]


def test_resume_rescores_a_slide_whose_annotation_changed(trained_model, ldc_sample_dir, tmp_path):
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    out = tmp_path / "out.parquet"
    run_job(folder, str(trained_model), out, boxes="voc", progress=False)
    xml = (folder / LDC_SAMPLES["RGB"]).with_suffix(".xml")
    boxes_before = len(read_voc(xml))
    text = xml.read_text()
    xml.write_text(text[:text.index("<object>")] + text[text.rindex("</object>") + len("</object>"):])  # boxes removed
    summary = run_job(folder, str(trained_model), out, boxes="voc", resume=True, progress=False)
    assert summary.scored == 1 and summary.skipped == len(LDC_SAMPLES) - 1
    rows = [r for r in read_rows(out) if r["path"] == LDC_SAMPLES["RGB"]]
    assert boxes_before > 0 and len(rows) == 1 and rows[0]["n_objects"] == 0


def test_resume_takes_each_file_from_one_source(trained_model, ldc_sample_dir, tmp_path):
    """A complete output plus the parts of a killed re-run both hold every file: resuming must not
    merge both copies (nor an old error row beside a newer success)."""
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    out = tmp_path / "out.parquet"
    run_job(folder, str(trained_model), out, boxes="voc", progress=False)
    first = read_rows(out)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    shutil.copy(out, parts / "part-00000.parquet")  # what a killed non-resume re-run leaves beside it
    summary = run_job(folder, str(trained_model), out, boxes="voc", resume=True, progress=False)
    again = read_rows(out)
    assert summary.scored == 0 and summary.skipped > 0
    assert len(again) == len(first) and sorted(map(key, again)) == sorted(map(key, first))


def test_a_job_that_fails_keeps_the_files_it_scored(trained_model, slides, tmp_path, monkeypatch):
    from imagezoo.batch import job as batch_job
    from imagezoo.batch.local_engine import run_local

    def engine_lost_halfway(job):  # scores three files, then dies (a lost Ray node, say)
        job.files = job.files[:3]
        run_local(job)
        raise RuntimeError("worker lost")

    monkeypatch.setitem(batch_job.ENGINES, "lost", engine_lost_halfway)
    out = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="worker lost"):
        run_job(slides, str(trained_model), out, engine="lost", num_workers=0, progress=False)
    assert not out.exists()
    summary = run_job(slides, str(trained_model), out, resume=True, num_workers=0, progress=False)
    assert summary.skipped == 3 and summary.scored + summary.errors == summary.files - 3
    assert len(read_rows(out)) == summary.files


def test_a_worker_killed_on_one_file_costs_only_that_file(trained_model, slides, tmp_path, monkeypatch):
    """A worker dies while it decodes one file, with other chunks in flight: that file gets an error row,
    every other file its usual rows, none twice (the job used to end with a RuntimeError)."""
    from imagezoo.batch import job as batch_job

    shutil.copy(slides / LDC_SAMPLES["RGB"], slides / KILLER)
    expected = tmp_path / "expected.parquet"
    run_job(slides, str(trained_model), expected, num_workers=0, progress=False)
    monkeypatch.setattr(batch_job, "Preprocessor", KilledOnKiller)
    out = tmp_path / "out.parquet"
    summary = run_job(slides, str(trained_model), out, num_workers=2, batch_size=2, progress=False)
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(discover(slides).names), "one row per file, none twice"
    row = next(r for r in rows if r["path"] == KILLER)
    assert "most likely out of memory" in row["error"] and row["label"] is None
    assert row["sha256"] == hashlib.sha256((slides / KILLER).read_bytes()).hexdigest()
    assert summary.errors == sum(r["error"] is not None for r in read_rows(expected)) + 1
    got = {r["path"]: r for r in rows}
    for want in read_rows(expected):
        if want["path"] != KILLER:
            assert got[want["path"]]["error"] == want["error"] and got[want["path"]]["label"] == want["label"]
            assert got[want["path"]]["prob_live"] == pytest.approx(want["prob_live"], abs=1e-5)


def test_a_batch_that_fails_fails_only_its_bad_file(trained_model, ldc_dir):
    import torch

    from imagezoo.batch.items import score_items
    from imagezoo.predictors import Item, JobOptions, load_predictor

    predictor = load_predictor(str(trained_model))
    good = Preprocessor(str(ldc_dir), predictor.preparer(JobOptions()))(LDC_SAMPLES["RGB"])
    expected = predictor.forward([good], 32)[0]
    odd = Item("odd.png", sha256="0" * 64, width=96, height=96, inputs=torch.zeros(1, 4, 96, 96, dtype=torch.uint8))
    (_, good_rows), (_, odd_rows) = score_items(predictor, [good, odd], 32, JobOptions())
    assert good_rows[0]["error"] is None and good_rows[0]["prob_live"] == pytest.approx(float(expected[0][1]), abs=1e-5)
    assert len(odd_rows) == 1 and "RuntimeError" in odd_rows[0]["error"] and "label" not in odd_rows[0]


def test_outputs_written_inside_the_folder_are_not_scored(trained_model, ldc_sample_dir, tmp_path):
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    out = folder / "results" / "out.parquet"
    first = run_job(folder, str(trained_model), out, progress=False)
    second = run_job(folder, str(trained_model), out, progress=False)
    assert first.files == second.files == len(discover(ldc_sample_dir).names)
    assert not any(row["path"].startswith("results/") for row in read_rows(out))


def test_ray_engine_gives_the_same_rows_as_local(trained_model, slides, tmp_path):
    pytest.importorskip("ray")
    local, distributed = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    run_job(slides, str(trained_model), local, boxes="voc", progress=False)
    summary = run_job(slides, str(trained_model), distributed, boxes="voc", engine="ray", progress=False)
    a = sorted(read_rows(local), key=key)
    b = sorted(read_rows(distributed), key=key)
    assert pq.read_schema(local).equals(pq.read_schema(distributed))
    assert [key(r) for r in a] == [key(r) for r in b]
    for x, y in zip(a, b):
        for column, value in x.items():
            if isinstance(value, float):
                assert y[column] == pytest.approx(value, abs=1e-4), column
            else:
                assert y[column] == value, column
    assert summary.errors == 6  # the five bad files and the named pipe


def test_ray_engine_records_a_file_whose_worker_dies_and_goes_on(trained_model, slides, tmp_path, monkeypatch):
    """Ray Data retries a task whose worker died forever by default: the job used to hang on such a file."""
    ray = pytest.importorskip("ray")
    from imagezoo.batch import job as batch_job

    shutil.copy(slides / LDC_SAMPLES["RGB"], slides / KILLER)
    expected = tmp_path / "expected.parquet"
    run_job(slides, str(trained_model), expected, progress=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this module
    monkeypatch.setattr(batch_job, "Preprocessor", KilledOnKiller)
    out = tmp_path / "out.parquet"
    summary = run_job(slides, str(trained_model), out, engine="ray", progress=False)
    rows = {r["path"]: r for r in read_rows(out)}
    assert len(read_rows(out)) == len(rows) == len(read_rows(expected)), "one row per file, none twice"
    assert "Ray task failed" in rows[KILLER]["error"] and rows[KILLER]["label"] is None
    assert summary.errors == sum(r["error"] is not None for r in read_rows(expected)) + 1
    for want in read_rows(expected):
        if want["path"] != KILLER:
            assert rows[want["path"]]["error"] == want["error"] and rows[want["path"]]["label"] == want["label"]


def test_box_index_is_the_position_in_the_annotation_file(trained_model, ldc_sample_dir, tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    name = LDC_SAMPLES["RGB"]
    shutil.copy(ldc_sample_dir / name, folder / name)
    xml = (ldc_sample_dir / name).with_suffix(".xml").read_text()
    outside = "<object><name>Dead Cell</name><bndbox><xmin>900</xmin><ymin>900</ymin><xmax>950</xmax><ymax>950</ymax></bndbox></object>"
    (folder / name).with_suffix(".xml").write_text(xml.replace("<object>", outside + "<object>", 1))
    out = tmp_path / "out.parquet"
    run_job(folder, str(trained_model), out, boxes="voc", progress=False)
    per_box = [r for r in read_rows(out) if r["box_index"] is not None]
    assert [r["box_index"] for r in per_box] == list(range(1, len(read_voc((folder / name).with_suffix(".xml")))))


def test_resume_redoes_the_rows_of_another_schema_version(tmp_path):
    """Columns alone do not say what a row means: a file written under another schema version is not reused."""
    from imagezoo.batch.output import previous_sources

    schema = output_schema(["dead", "live"])
    out = tmp_path / "out.parquet"
    older = schema.with_metadata({"imagezoo_schema_version": "3"})
    pq.write_table(pa.Table.from_pylist([], schema=older), out)
    assert previous_sources(out, schema) == []
    pq.write_table(pa.Table.from_pylist([], schema=schema), out)
    assert previous_sources(out, schema) == [out]
    # a column's description reworded under the same version: the rows are the same kind, reused
    reworded = pa.schema([field.with_metadata({"description": "reworded"}) for field in schema],
                         metadata=schema.metadata)
    pq.write_table(pa.Table.from_pylist([], schema=reworded), out)
    assert previous_sources(out, schema) == [out]


def test_resume_redoes_the_rows_of_a_file_that_is_not_parquet(tmp_path):
    """An --out that names some other file, or a part cut short by a power loss, is redone, not a crash."""
    from imagezoo.batch.output import parts_dir_for, previous_sources

    schema = output_schema(["dead", "live"])
    out = tmp_path / "out.parquet"
    out.write_text("not parquet")
    parts = parts_dir_for(out)
    parts.mkdir()
    pq.write_table(pa.Table.from_pylist([], schema=schema), parts / "part-a-000000.parquet")
    (parts / "part-a-000001.parquet").write_bytes((parts / "part-a-000000.parquet").read_bytes()[:40])
    assert previous_sources(out, schema) == [parts / "part-a-000000.parquet"]


def test_label_images_are_not_written_among_the_inputs(tmp_path):
    """Beside the inputs, a run's label images would be scored as inputs by the next run (x.png.png, ...)."""
    (tmp_path / "slide.png").write_bytes(b"any")
    with pytest.raises(ValueError, match="--masks-dir is --dir"):
        run_job(tmp_path, "models/nuclei-unet", tmp_path / "out.parquet", masks_dir=tmp_path, progress=False)
