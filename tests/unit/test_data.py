"""Training data: the JSONL schema, importers (ours and other tools' label files), checks with row
numbers, and weighted mixing."""

import json
import re

import numpy as np
import pytest
from samples import noise_image

from qinsight_sdk.evaluation.data import (
    DataError,
    from_csv,
    from_deqa,
    from_koniq,
    from_mos_list,
    from_pyiqa,
    from_qinsight_comparison,
    load_records,
    mix,
    read_jsonl,
    read_records,
    read_source,
)


@pytest.fixture
def root(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        noise_image(len(name)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_schema_for_every_task(root):
    path = write_jsonl(
        root / "data.jsonl",
        [
            {"task": "score", "image": "a.png", "mos": 75, "mos_range": [0, 100]},
            {"task": "score", "image": "b.png", "mos": 4.2},
            {"task": "degradation", "image": "c.png", "distortion_class": "null", "severity": "null"},
            {"task": "comparison", "image_a": "a.png", "image_b": "b.png", "reference": "c.png", "answer": "Similar"},
            {"task": "comparison", "image_a": "a.png", "image_b": "b.png", "answer": "Image B"},
        ],
    )
    samples = read_jsonl(path, root)
    assert [s.task for s in samples] == ["score", "score", "degradation", "comparison", "comparison"]
    assert samples[0].mos == 4.0 and samples[1].mos == 4.2
    assert samples[3].images == (root / "c.png", root / "a.png", root / "b.png")
    assert "Reference Image:" in json.dumps(samples[3].conversation())
    assert "Reference Image:" not in json.dumps(samples[4].conversation())
    assert samples[2].columns()["distortion_class"] == "null" and samples[0].columns()["sample_id"] == "data.jsonl:1"


def test_problems_are_reported_with_row_numbers(root):
    path = write_jsonl(
        root / "bad.jsonl",
        [
            {"task": "score", "image": "a.png", "mos": 3.0},
            {"task": "score", "image": "missing.png", "mos": 3.0},
            {"task": "score", "image": "broken.png", "mos": 3.0},
            {"task": "score", "image": "a.png", "mos": 70},
            {"task": "degradation", "image": "a.png", "distortion_class": "rain", "severity": "slight"},
            {"task": "caption", "image": "a.png"},
            {"task": "comparison", "image_a": "a.png", "answer": "Image A"},
        ],
    )
    with pytest.raises(DataError) as error:
        read_jsonl(path, root)
    message = str(error.value)
    assert "6 bad rows" in message
    for row, fragment in [
        (2, "missing.png not found"),
        (3, "broken.png unreadable"),
        (4, "outside [1, 5]"),
        (5, "unknown label"),
        (6, "task must be"),
        (7, "missing field 'image_b'"),
    ]:
        assert f"bad.jsonl:{row}: " in message and fragment in message
    kept = read_jsonl(path, root, skip_bad=True)
    assert [s.origin for s in kept] == ["bad.jsonl:1"]


def test_importers(root):
    deqa = root / "train_koniq_7k.json"
    deqa.write_text(json.dumps([{"image": "a.png", "gt_score": 80.1, "gt_score_norm": 4.1, "std": 0.3}]))
    comparison = root / "diffiqa.json"
    comparison.write_text(
        json.dumps([{"ref_image": "c.png", "ImageA": "a.png", "ImageB": "b.png", "result": "Image B"}])
    )
    table = root / "scores.csv"
    table.write_text("image,mos\na.png,10\nb.png,30\nc.png,20\n")
    records = from_deqa(deqa) + from_qinsight_comparison(comparison) + from_csv(table)
    samples = load_records([(f"row {i}", r) for i, r in enumerate(records)], root)
    assert samples[0].mos == 4.1
    assert samples[1].answer == "Image B" and samples[1].images[0] == root / "c.png"
    assert [s.mos for s in samples[2:]] == [1.0, 5.0, 3.0]  # min-max over the file
    assert [s.mos for s in load_records([("r", r) for r in from_csv(table, mos_range=(0, 40))], root)] == [
        2.0,
        4.0,
        3.0,
    ]


def test_mixing(root):
    samples = read_jsonl(
        write_jsonl(root / "d.jsonl", [{"task": "score", "image": "a.png", "mos": 1 + i / 10} for i in range(10)]), root
    )
    mixed = mix([(samples[:4], 2.0), (samples[4:], 0.5)], seed=3)
    assert len(mixed) == 8 + 3
    assert sum(s in samples[:4] for s in mixed) == 8
    assert mix([(samples[:4], 2.0), (samples[4:], 0.5)], seed=3) == mixed  # seeded
    with pytest.raises(ValueError):
        mix([(samples, -1.0)])


# -- label files other tools write: pyiqa meta_info, whitespace MOS lists, KonIQ-10k's scores ----------

SPAQ_HEADER = (
    "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness,Animal,Cityscape,Human,"
    "Indoor scene,Landscape,Night scene,Plant,Still-life,Others,Focal length,F-number,Exposure time,ISO,"
    "Brightness,Flash,Time0,Time1"
)


def scores(records):
    return [(r["image"], r["mos"]) for r in records]


def test_pyiqa_meta_info_of_no_reference_sets(tmp_path):
    koniq = tmp_path / "meta_info_KonIQ10kDataset.csv"
    koniq.write_text(
        "img_name,mos,std,split,c1,c2,c3,c4,c5,c_total\n"
        "10004473376.jpg,77.3836206897,0.527277894494,0,0.0,0.0,0.238095238095,0.695238095238,"
        "0.0666666666667,105\n"
        "10007357496.jpg,68.7285714286,0.580003024795,2,0.0,0.03125,0.46875,0.489583333333,"
        "0.0104166666667,96\n"
    )
    livec = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    livec.write_text(
        "img_name,mos,std\nt1.bmp,63.963406174124174,18.376200073180403\nt2.bmp,25.335306406685238,13.651431474621623\n"
    )
    spaq = tmp_path / "meta_info_SPAQDataset.csv"
    spaq.write_text(
        SPAQ_HEADER + "\n00001.jpg,48.86,47.43,55.57,55.71,37.86,42.57,0.0,0.333333,0.0,0.0,0.0,"
        "0.333333,0.0,0.333333,0.0,4.2,1.7,0.1,200,-1.21,0,-0.965926,-0.258819\n"
    )
    koniq_plus = tmp_path / "meta_info_KonIQ10k++Dataset.csv"
    koniq_plus.write_text(
        '"filename","qmos","sd","votes","artifacts","blur","contrast","colors","other",'
        '"degraded.amount"\n"826373.jpg",3.953125,1.03017470393857,64,0.046875,0.046875,0.234375,'
        "0.109375,0,0.0875\n"
    )
    agiqa = tmp_path / "data.csv"  # AGIQA-3K's own labels: the quality MOS, not the text alignment one
    agiqa.write_text(
        "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
        "AttnGAN_normal_000.jpg,a cat,,,,1.0820,0.2230,2.3250,0.6771\n"
    )
    assert scores(from_pyiqa(koniq, file_range=False)) == [
        ("10004473376.jpg", 77.3836206897),
        ("10007357496.jpg", 68.7285714286),
    ]
    assert scores(from_pyiqa(livec, file_range=False)) == [
        ("t1.bmp", 63.963406174124174),
        ("t2.bmp", 25.335306406685238),
    ]
    assert scores(from_pyiqa(spaq, file_range=False)) == [("00001.jpg", 48.86)]
    assert scores(from_pyiqa(koniq_plus, file_range=False)) == [("826373.jpg", 3.953125)]
    assert scores(from_pyiqa(agiqa, file_range=False)) == [("AttnGAN_normal_000.jpg", 1.082)]
    assert from_pyiqa(koniq, mos_range=(0, 100))[0] == {
        "task": "score",
        "image": "10004473376.jpg",
        "mos": 77.3836206897,
        "mos_range": [0, 100],
    }
    samples = read_source(livec, "pyiqa", mos_range=(0, 100), check_images=False)
    assert [s.images for s in samples] == [(tmp_path / "t1.bmp",), (tmp_path / "t2.bmp",)]
    assert [s.mos for s in samples] == [
        pytest.approx(1 + 4 * 0.63963406174124174),
        pytest.approx(1 + 4 * 0.25335306406685238),
    ]
    assert [s.mos for s in read_source(livec, "pyiqa", check_images=False)] == [5.0, 1.0]  # training: per file


def test_pyiqa_full_reference_rows_give_the_distorted_image(tmp_path):
    kadid = tmp_path / "meta_info_KADID10kDataset.csv"
    kadid.write_text(
        "ref_name,dist_name,dmos,std\nI01.png,I01_01_01.png,4.57,0.496\nI01.png,I01_01_02.png,4.33,0.869\n"
    )
    tid = tmp_path / "meta_info_TID2013Dataset.csv"
    tid.write_text(
        "ref_name,dist_name,mos,std\nI01.BMP,I01_01_1.bmp,5.51429,0.13013\nI01.BMP,i01_01_2.bmp,5.56757,0.16008\n"
    )
    pipal = tmp_path / "meta_info_PIPALDataset.csv"
    pipal.write_text(
        "hq_name,dist_name,elo_score\nA0001.bmp,A0001_00_00.bmp,1520.0648\nA0001.bmp,A0001_00_01.bmp,1437.0798\n"
    )
    # KADID-10k's "dmos" is a 1-5 degradation rating, higher is better: read as MOS
    assert scores(from_pyiqa(kadid, file_range=False)) == [("I01_01_01.png", 4.57), ("I01_01_02.png", 4.33)]
    assert scores(from_pyiqa(tid, file_range=False)) == [("I01_01_1.bmp", 5.51429), ("i01_01_2.bmp", 5.56757)]
    assert scores(from_pyiqa(pipal, file_range=False)) == [
        ("A0001_00_00.bmp", 1520.0648),
        ("A0001_00_01.bmp", 1437.0798),
    ]
    (first, _) = read_source(kadid, "pyiqa", image_root=tmp_path / "images", check_images=False, file_range=False)
    assert first.images == (tmp_path / "images" / "I01_01_01.png",) and first.mos == 4.57


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("meta_info_CSIQDataset.csv", "ref_name,dist_name,dmos\n1600.png,1600.AWGN.1.png,0.061989\n", "CSIQ's 'dmos'"),
        (
            "meta_info_LIVEIQADataset.csv",
            "ref_name,dist_name,mos\nrefimgs/studentsculpture.bmp,jp2k/img2.bmp,28.0\n",
            "LIVE IQA's 'mos' column is DMOS",
        ),
        (
            "meta_info_LIVEMDDataset.csv",
            "ref_name,dist_name,dmos\nPart 1/blurjpeg/babygirl.bmp,"
            "Part 1/blurjpeg/babygirl_blur1.bmp,21.57894736842105\n",
            "LIVE-MD's 'dmos'",
        ),
        ("my_labels.csv", "ref_name,dist_name,dmos\nr.png,d.png,0.2\n", "rename the column to mos"),
    ],
)
def test_pyiqa_dmos_where_lower_is_better_is_refused(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as error:
        from_pyiqa(path)
    assert fragment in str(error.value) and "does not read DMOS as MOS" in str(error.value)
    assert "mos = HIGH - dmos" in str(error.value)


def test_pyiqa_bad_rows_and_foreign_headers(tmp_path):
    path = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    path.write_text("img_name,mos,std\nt1.bmp,63.9,18.3\nt2.bmp,n/a,13.6\n,25.3,1.0\n")
    with pytest.raises(DataError) as error:
        read_records(path, "pyiqa")
    assert "2 bad rows" in str(error.value)
    assert "meta_info_LIVEChallengeDataset.csv:3: mos 'n/a' is not a number" in str(error.value)  # file lines,
    assert "meta_info_LIVEChallengeDataset.csv:4: no image name" in str(error.value)  # header is 1
    pairs = tmp_path / "meta_info_PieAPPDataset.csv"
    pairs.write_text("ref_img_path,dist_imgA_path,dist_imgB_path,raw preference for A\nr.png,a.png,b.png,0.3\n")
    with pytest.raises(DataError, match="not a pyiqa meta_info CSV"):
        from_pyiqa(pairs)


def test_whitespace_mos_lists(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text(
        "10004473376.jpg 4.478899486428679 0.527277894494\n"  # image mos std (KonIQ, SPAQ)
        "DatabaseImage0190.JPG 52.28900832768076\n"  # image mos (BID)
        "\n"
        "0_0.png 0_1.png 4.569234903368079\n"  # reference image mos (Deblur)
        "I01.png I01_01_01.png 4.13 0.7063993204979744\n"  # reference image mos std (KADID)
        "  t1.bmp\t68.01712128701747   18.3762  \n"
    )
    records = read_records(path, "mos-list", file_range=False)
    assert [(origin, r["image"], r["mos"]) for origin, r in records] == [
        ("labels.txt:1", "10004473376.jpg", 4.478899486428679),
        ("labels.txt:2", "DatabaseImage0190.JPG", 52.28900832768076),
        ("labels.txt:4", "0_1.png", 4.569234903368079),
        ("labels.txt:5", "I01_01_01.png", 4.13),
        ("labels.txt:6", "t1.bmp", 68.01712128701747),
    ]
    assert all("mos_range" not in r for _, r in records)
    assert scores(from_mos_list(path, mos_range=(0, 100)))[0] == ("10004473376.jpg", 4.478899486428679)
    assert from_mos_list(path, mos_range=(0, 100))[0]["mos_range"] == [0, 100]


def test_a_malformed_mos_list_line_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a.png 3.2\n\nb.png\nc.png 3.1 high\nr.png d.png e.png 2.0\nf.png 1_000\n")
    with pytest.raises(DataError) as error:
        read_records(path, "mos-list")
    message = str(error.value)
    assert "4 malformed lines" in message
    for line in (3, 4, 5, 6):
        assert f"bad.txt:{line}: expected 'image mos [std]' or 'reference image mos [std]'" in message
    assert "bad.txt:1:" not in message


def test_rounding_past_the_scale_is_not_an_error(tmp_path):
    path = tmp_path / "SRIQA-Bench_test_all.txt"
    path.write_text("online50_Original.png online50_SeeSRx4.png 100.00000000000001\nx.png y.png 0.0\n")
    samples = read_source(path, "mos-list", mos_range=(0, 100), check_images=False, file_range=False)
    assert [s.mos for s in samples] == [5.0, 1.0]


def test_koniq_scores_and_distributions(tmp_path):
    path = tmp_path / "koniq10k_scores_and_distributions.csv"
    path.write_text(
        '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"\n'
        '"10004473376.jpg",0,0,25,73,7,105,3.828571429,0.527277894,77.38362069\n'
        '"10007357496.jpg",0,3,45,47,1,96,3.479166667,0.580003025,68.72857143\n'
    )
    assert from_koniq(path, file_range=False) == [
        {"task": "score", "image": "10004473376.jpg", "mos": 3.828571429},
        {"task": "score", "image": "10007357496.jpg", "mos": 3.479166667},
    ]
    assert [s.mos for s in read_source(path, "koniq", check_images=False, file_range=False)] == [
        3.828571429,
        3.479166667,
    ]
    (tmp_path / "other.csv").write_text("image,mos\na.png,3\n")
    with pytest.raises(DataError, match="not KonIQ-10k's scores CSV"):
        from_koniq(tmp_path / "other.csv")


# -- video data sets ---------------------------------------------------------------------------------------


def test_konvid_lsvq_and_live_vqc_labels_name_their_videos_on_the_right_scale(tmp_path):
    from scipy.io import savemat

    from qinsight_sdk.evaluation.data import csv_format, read_records

    konvid = tmp_path / "KoNViD_1k_attributes.csv"
    konvid.write_text("flickr_id,MOS,SD,n,file_name\n3337642103,4.64,0.5,50,3337642103.mp4\n8536919744,1.22,0.4,50,\n")
    assert csv_format(konvid) == "konvid"
    # file_name is read where the file has it; a row without it is an error, not a silent fall-back
    with pytest.raises(DataError, match="KoNViD_1k_attributes.csv:3: no image name"):
        read_records(konvid, "konvid", file_range=False)
    konvid.write_text("flickr_id,MOS\n3337642103,4.64\n8536919744,1.22\n")
    assert [r for _, r in read_records(konvid, "konvid", file_range=False)] == [
        {"task": "score", "image": "3337642103.mp4", "mos": 4.64},  # 1-5 already, the id's video
        {"task": "score", "image": "8536919744.mp4", "mos": 1.22},
    ]
    lsvq = tmp_path / "labels_test_1080p.csv"
    lsvq.write_text(
        "name,height,width,mos,frame_number\nia-batch1/clip_a,1080,1920,75.0,240\nyfcc/b.mkv,720,1280,25,90\n"
    )
    assert csv_format(lsvq) == "lsvq"
    assert csv_format(lsvq.rename(tmp_path / "meta_info_x.csv")) == "pyiqa"  # only LSVQ's own file names
    read = [r for _, r in read_records(tmp_path / "meta_info_x.csv", "lsvq", file_range=False)]
    assert read == [
        {"task": "score", "image": "ia-batch1/clip_a.mp4", "mos": 75.0, "mos_range": [0.0, 100.0]},
        {"task": "score", "image": "yfcc/b.mkv", "mos": 25.0, "mos_range": [0.0, 100.0]},
    ]
    assert read_records(tmp_path / "meta_info_x.csv", "lsvq", (10, 90))[0][1]["mos_range"] == [10, 90]
    mat = tmp_path / "data.mat"
    savemat(
        mat, {"video_list": np.array([["A001.mp4"], ["B002.mp4"]], dtype=object), "mos": np.array([[80.5], [20.0]])}
    )
    assert [r for _, r in read_records(mat, "live-vqc", file_range=False)] == [
        {"task": "score", "image": "A001.mp4", "mos": 80.5, "mos_range": [0.0, 100.0]},
        {"task": "score", "image": "B002.mp4", "mos": 20.0, "mos_range": [0.0, 100.0]},
    ]
    from qinsight_sdk.evaluation.runner import guess_format

    assert guess_format(mat) == "live-vqc" and guess_format(konvid) == "konvid"


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("a.csv", "video,MOS\na.mp4,3\n", "not KoNViD-1k's attributes CSV: no file_name (or flickr_id)"),
        ("b.csv", "flickr_id,MOS\n123,high\n", "b.csv:2: MOS 'high' is not a number"),
        ("c.csv", "flickr_id,MOS,MOS\n1,2,3\n", "the header names 'MOS' twice"),
    ],
)
def test_bad_konvid_files_say_what_is_wrong(tmp_path, name, text, fragment):
    from qinsight_sdk.evaluation.data import read_records

    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=re.escape(fragment)):
        read_records(tmp_path / name, "konvid")


def test_bad_lsvq_and_live_vqc_files_say_what_is_wrong(tmp_path):
    from scipy.io import savemat

    from qinsight_sdk.evaluation.data import read_records

    (tmp_path / "labels.csv").write_text("video,score\na,3\n")
    with pytest.raises(DataError, match="not an LSVQ labels CSV: no name or mos column"):
        read_records(tmp_path / "labels.csv", "lsvq")
    savemat(tmp_path / "keys.mat", {"videos": np.array(["a"], dtype=object)})
    with pytest.raises(DataError, match=r"not LIVE-VQC's data.mat: no video_list or mos in it \(videos\)"):
        read_records(tmp_path / "keys.mat", "live-vqc")
    savemat(tmp_path / "short.mat", {"video_list": np.array(["a", "b"], dtype=object), "mos": np.array([1.0])})
    with pytest.raises(DataError, match="2 videos in video_list but 1 scores in mos"):
        read_records(tmp_path / "short.mat", "live-vqc")
    savemat(tmp_path / "nan.mat", {"video_list": np.array(["a", ""], dtype=object), "mos": np.array([np.nan, 2.0])})
    with pytest.raises(DataError, match=r"(?s)nan.mat:1: mos nan is not a number.*nan.mat:2: no video name"):
        read_records(tmp_path / "nan.mat", "live-vqc")
    (tmp_path / "text.mat").write_text("not a MATLAB file")
    with pytest.raises(DataError, match="not a MATLAB file SciPy reads"):
        read_records(tmp_path / "text.mat", "live-vqc")


def test_multi_dimension_labels_give_each_dimension_and_their_mean(tmp_path):
    from qinsight_sdk.evaluation.data import csv_format, read_records

    path = tmp_path / "aigc.csv"
    path.write_text("video,prompt,spatial,temporal,consistency\na.mp4,a cat,80,40,60\nb.mp4,a dog,0,100,50\n")
    assert csv_format(path) == "dimensions"
    (first, second) = read_source(path, "dimensions", check_images=False)
    assert first.mos == pytest.approx(1 + 4 * 0.6) and second.mos == pytest.approx(3.0)  # the mean, on [1, 5]
    assert first.dimensions == (("spatial", 4.2), ("temporal", 2.6), ("consistency", 3.4))
    assert read_records(path, "dimensions", (0, 200))[0][1]["mos_range"] == [0, 200]
    path.write_text("video,spatial,temporal,consistency\na.mp4,80,x,60\n,1,2,3\nc.mp4,1,2\n")
    with pytest.raises(DataError) as raised:
        read_records(path, "dimensions")
    assert str(raised.value).splitlines()[1:] == [
        "aigc.csv:2: temporal 'x' is not a number",
        "aigc.csv:3: no video name",
        "aigc.csv:4: 3 fields, but the header (line 1) has 4",
    ]
    path.write_text("video,spatial,temporal\na.mp4,1,2\n")
    with pytest.raises(DataError, match="needs a video \\(or image\\) column and spatial, temporal, consistency"):
        read_records(path, "dimensions")
    path.write_text("video,spatial,temporal,consistency\na.mp4,120,50,50\n")
    with pytest.raises(DataError, match="spatial 5.8 is outside \\[1, 5\\]"):
        read_source(path, "dimensions", check_images=False)


def test_video_label_files_name_their_problems(tmp_path):
    from scipy.io import savemat

    from qinsight_sdk.evaluation.data import _finite_number, read_records

    konvid = tmp_path / "KoNViD_1k_attributes.csv"
    konvid.write_text("flickr_id,MOS\n1,2.0\n2,4.0,extra\n")
    with pytest.raises(DataError, match=r"KoNViD_1k_attributes.csv:3: 3 fields, but the header \(line 1\) has 2"):
        read_records(konvid, "konvid")
    konvid.write_text("flickr_id,MOS\n1,2.0\n2,4.0\n")
    stretched = [r for _, r in read_records(konvid, "konvid")]  # training: the file's own range
    assert [r["mos_range"] for r in stretched] == [[2.0, 4.0]] * 2
    assert read_records(konvid, "konvid", (0, 10), file_range=False)[0][1]["mos_range"] == [0, 10]
    (tmp_path / "k.csv").write_text("id,score\n1,2\n")
    with pytest.raises(DataError, match=r"no file_name \(or flickr_id\) or no MOS column in 'id,score'$"):
        read_records(tmp_path / "k.csv", "konvid")
    for repeated in ("name,name,mos", "name,mos,mos"):
        (tmp_path / "labels.csv").write_text(repeated + "\na,b,1\n")
        with pytest.raises(DataError, match=r"^labels.csv:1: the header names '(name|mos)' twice"):
            read_records(tmp_path / "labels.csv", "lsvq")
    (tmp_path / "labels.csv").write_text("video,score\na,3\n")
    with pytest.raises(DataError, match="no name or mos column in 'video,score'$"):
        read_records(tmp_path / "labels.csv", "lsvq")
    savemat(tmp_path / "only.mat", {"video_list": np.array(["a"], dtype=object)})
    with pytest.raises(DataError, match=r"no video_list or mos in it \(video_list\)$"):
        read_records(tmp_path / "only.mat", "live-vqc")
    savemat(tmp_path / "other.mat", {"b": np.array([1.0]), "a": np.array([2.0])})
    with pytest.raises(DataError, match=r"no video_list or mos in it \(a, b\)$"):
        read_records(tmp_path / "other.mat", "live-vqc")
    savemat(tmp_path / "empty.mat", {})
    with pytest.raises(DataError, match=r"no video_list or mos in it \(nothing\)$"):
        read_records(tmp_path / "empty.mat", "live-vqc")
    savemat(tmp_path / "data.mat", {"video_list": np.array(["a.mp4", "b"], dtype=object), "mos": np.array([1.0, 2.0])})
    assert [origin for origin, _ in read_records(tmp_path / "data.mat", "live-vqc")] == ["data.mat:1", "data.mat:2"]
    assert not _finite_number("x") and not _finite_number(None) and not _finite_number(float("inf"))
    assert _finite_number("2.5") and _finite_number(np.float64(3))


def test_multi_dimension_labels_take_an_image_column_and_name_what_they_lack(tmp_path):
    from qinsight_sdk.evaluation.data import read_records

    path = tmp_path / "dims.csv"
    path.write_text("image,spatial,temporal,consistency\na.mp4,10,20,30\n")
    assert read_records(path, "dimensions")[0][1]["image"] == "a.mp4"
    path.write_text("clip,spatial,temporal,consistency\na.mp4,10,20,30\n")
    with pytest.raises(DataError) as raised:
        read_records(path, "dimensions")
    assert str(raised.value).endswith(
        "not a multi-dimension label CSV: it needs a video (or image) column and spatial, temporal, "
        "consistency; 'clip,spatial,temporal,consistency' lacks video"
    )
    path.write_text("video,spatial\na.mp4,10\n")
    with pytest.raises(DataError, match="'video,spatial' lacks temporal, consistency$"):
        read_records(path, "dimensions")
    path.write_text("video,spatial,spatial,temporal,consistency\na,1,2,3,4\n")
    with pytest.raises(DataError, match=r"^dims.csv:1: the header names 'spatial' twice"):
        read_records(path, "dimensions")


def test_a_video_judges_rows_are_compared_with_labels_on_one_to_five():
    from qinsight_sdk.evaluation.runner import on_label_scale

    settings = {"profile": "vqinsight-naturalvideo"}
    row = {
        "score": 50.0,
        "expected_score": 75.0,
        "dimensions": {"spatial": 25.0, "temporal": None},
        "settings": settings,
    }
    assert on_label_scale(row) == {
        "score": 3.0,
        "expected_score": 4.0,
        "dimensions": {"spatial": 2.0, "temporal": None},
        "settings": settings,
    }
    assert row["score"] == 50.0  # the row itself is left as the judge wrote it
    assert on_label_scale({"score": 0.0, "settings": settings})["score"] == 1.0
    assert on_label_scale({"score": 100.0, "expected_score": None, "settings": settings}) == {
        "score": 5.0,
        "expected_score": None,
        "settings": settings,
    }
    for kept in (
        {"score": 3.5, "settings": {"profile": "q-insight"}},
        {"score": 3.5, "settings": {"profile": "rali"}},
        {"score": 3.5, "settings": {"profile": "my-own"}},
        {"score": 3.5},
        {"score": None, "error": "x", "settings": settings},
    ):
        assert on_label_scale(kept) is kept
