"""The real-data converters in ``scripts/realdata``: rows kept, skipped and counted, git sources, atomic output.

Each converter runs as its own script (as the README runs it) on a tiny synthetic source laid out like
the public repository it reads, either a plain folder or a bare git directory built here with ``git``.
No network, no shared data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "realdata"
CONVERTERS = ("us_wholefoods.py", "australia_coles.py", "russia_uhtt.py", "queries_ru_x5.py")
CATALOG_HEADER = "product_id,name,brand,category_path"
PLAIN = "(plain folder)"
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}

Files = Mapping[str, str | bytes]


# --- helpers ------------------------------------------------------------------------------------


def write_tree(root: Path, files: Files) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        else:
            path.write_bytes(content)
    return root


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def git_source(tmp_path: Path, *snapshots: Files) -> tuple[Path, Path, list[str]]:
    """A checkout committed once per snapshot (files written over the previous ones), and its bare clone."""
    work = tmp_path / "checkout"
    work.mkdir()
    git(work, "init", "-q")
    shas = []
    for number, files in enumerate(snapshots, 1):
        write_tree(work, files)
        git(work, "add", "-A")
        git(work, "commit", "-q", "--no-gpg-sign", "-m", f"snapshot {number}")
        shas.append(git(work, "rev-parse", "HEAD"))
    bare = tmp_path / "repo.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return bare, work, shas


def source_of(kind: str, tmp_path: Path, files: Files) -> tuple[Path, str]:
    """The source path and the commit the converter will report for it."""
    if kind == "folder":
        return write_tree(tmp_path / "src", files), PLAIN
    bare, _work, shas = git_source(tmp_path, files)
    return bare, shas[-1]


def convert(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def succeeded(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def skipped(n: int, reason: str) -> str:
    return f"  skipped {n:>8}  {reason}"


def summary(products: int, brands: int, paths: int, nodes: int, depth: int, output: Path, commit: str) -> list[str]:
    return [
        f"  products: {products}",
        f"  brands: {brands}",
        f"  category paths used: {paths}",
        f"  category nodes: {nodes}",
        f"  max depth: {depth}",
        f"  output: {output}",
        f"  source commit: {commit}",
    ]


def read_lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\n")


# --- us-wholefoods --------------------------------------------------------------------------------

WF_HEADER = "name,brand,category,subcategory,regular_price,ASIN,product_url\n"
WF_SOURCE = (
    "\ufeff"
    + WF_HEADER
    + (  # the byte-order mark must not hide the `name` column
        '"Organic Bananas, 1 lb",PRODUCE,Produce,Fresh Fruit,0.69,B01,https://x/1\n'
        "Ribeye  Steak,Meat,Meat & Seafood,Beef,12.99,B02,https://x/2\n"
        "Wild Salmon Fillet,seafood,Meat & Seafood,Fish>Seafood,9.99,B03,https://x/3\n"
        '"Organic Almond Milk, 64 fl oz",Califia Farms,Dairy & Eggs,Plant-Based Milk,4.99,B04,https://x/4\n'
        '"Organic Almond Milk, 64 fl oz",Califia Farms,Beverages,Plant-Based Milk,4.99,B04,https://x/4b\n'
        "Sandwich Bread,Bakery,Bread Rolls & Bakery,Bread,3.49,B05,https://x/5\n"
        "Chicken Tikka Masala,Prepared Foods,Prepared Foods,Entrees,8.99,B06,https://x/6\n"
        ",365 by Whole Foods Market,Pantry Essentials,Pasta,1.29,B07,https://x/7\n"
        "Sea Salt Chips,Kettle Brand,,,2.99,B08,https://x/8\n"
        "Sea Salt Crackers,365 by Whole Foods Market,Snacks,,3.29,B09,https://x/9\n"
        "Mystery Item,Acme,Pantry Essentials,Pasta,1.00,,https://x/10\n"
    )
)


def test_us_wholefoods_one_row_per_asin_and_department_brands_emptied(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"wholefoods.csv": WF_SOURCE, "README.md": "not read\n"})
    out = tmp_path / "out" / "us-wholefoods"  # created, parents included

    stdout = succeeded(convert("us_wholefoods.py", src, out))

    assert read_lines(out / "catalog.csv") == [
        CATALOG_HEADER,
        'B01,"Organic Bananas, 1 lb",,Produce > Fresh Fruit',
        "B02,Ribeye Steak,,Meat & Seafood > Beef",
        "B03,Wild Salmon Fillet,,Meat & Seafood > Fish/Seafood",
        'B04,"Organic Almond Milk, 64 fl oz",Califia Farms,Dairy & Eggs > Plant-Based Milk',
        "B05,Sandwich Bread,,Bread Rolls & Bakery > Bread",
        "B06,Chicken Tikka Masala,,Prepared Foods > Entrees",
        "B09,Sea Salt Crackers,365 by Whole Foods Market,Snacks",
        "",
    ]
    assert stdout == [
        "us-wholefoods from wholefoods.csv: rows read 11, written 7, skipped 4",
        skipped(1, "ASIN seen before (listed in another subcategory)"),
        skipped(1, "no ASIN"),
        skipped(1, "no category"),
        skipped(1, "no name"),
        *summary(7, 2, 7, 12, 2, out / "catalog.csv", PLAIN),
    ]
    assert sorted(os.listdir(out)) == ["catalog.csv"]  # no temporary file left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "catalog.csv").stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_us_wholefoods_reads_a_bare_git_dir_at_head_or_at_commit_and_a_checkout_at_head(tmp_path: Path) -> None:
    old = WF_HEADER + "Bananas,Dole,Produce,Fruit,0.59,B01,https://x/1\n"
    new = WF_HEADER + (
        "Organic Bananas,PRODUCE,Produce,Fresh Fruit,0.69,B01,https://x/1\n"
        "Sourdough Loaf,Bakery,Bakery,Bread,4.99,B02,https://x/2\n"
    )
    bare, work, (first, second) = git_source(tmp_path, {"wholefoods.csv": old}, {"wholefoods.csv": new})
    (work / "wholefoods.csv").write_text(WF_HEADER + "Uncommitted,X,Y,Z,1,B99,u\n", encoding="utf-8")

    head_out, old_out, checkout_out = tmp_path / "head", tmp_path / "old", tmp_path / "checkout-out"
    head = succeeded(convert("us_wholefoods.py", bare, head_out))
    at_first = succeeded(convert("us_wholefoods.py", bare, old_out, "--commit", first[:10]))
    checkout = succeeded(convert("us_wholefoods.py", work, checkout_out))

    new_rows = [CATALOG_HEADER, "B01,Organic Bananas,,Produce > Fresh Fruit", "B02,Sourdough Loaf,,Bakery > Bread", ""]
    assert read_lines(head_out / "catalog.csv") == new_rows
    assert head[0] == "us-wholefoods from wholefoods.csv: rows read 2, written 2, skipped 0"
    assert head[-1] == f"  source commit: {second}"
    assert read_lines(old_out / "catalog.csv") == [CATALOG_HEADER, "B01,Bananas,Dole,Produce > Fruit", ""]
    assert at_first[-1] == f"  source commit: {first}"  # the short name resolved to the full commit
    # A checkout is read through its .git at HEAD: the uncommitted edit is not seen.
    assert read_lines(checkout_out / "catalog.csv") == new_rows
    assert checkout[-1] == f"  source commit: {second}"


def test_us_wholefoods_missing_file_fails_and_leaves_the_old_output(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"other.csv": WF_SOURCE})
    out = write_tree(tmp_path / "out", {"catalog.csv": "previous output\n"})

    done = convert("us_wholefoods.py", src, out)

    assert done.returncode == 1
    assert done.stderr.strip() == f"{src}: no wholefoods.csv at {PLAIN}"
    assert done.stdout == ""
    assert sorted(os.listdir(out)) == ["catalog.csv"]
    assert (out / "catalog.csv").read_text(encoding="utf-8") == "previous output\n"


def test_unknown_commit_fails_and_leaves_the_old_output(tmp_path: Path) -> None:
    bare, _work, _shas = git_source(tmp_path, {"wholefoods.csv": WF_SOURCE})
    out = write_tree(tmp_path / "out", {"catalog.csv": "previous output\n"})

    done = convert("us_wholefoods.py", bare, out, "--commit", "no-such-commit")

    assert done.returncode != 0
    assert "no-such-commit" in done.stderr
    assert sorted(os.listdir(out)) == ["catalog.csv"]
    assert (out / "catalog.csv").read_text(encoding="utf-8") == "previous output\n"


# --- australia-coles ------------------------------------------------------------------------------

COLES_PRODUCT = "prodid,brand,name,size,current_price,full_price,raw_description\n"
COLES_HIER = "prodid,aisle,category,subcategory,aisle_id,category_id,subcategory_id\n"
# Weeks chosen so that neither string order gives the date order (newest first: 03-09, 28-08, 10-08).
COLES_SOURCE = {
    "Coles/03-09-2025/Dairy/1_product.csv": COLES_PRODUCT
    + (
        "100,Dairy Farmers,Full Cream Milk 2L,2l,3.10,3.10,d\n"  # already ends with the size (any case)
        "101,Chobani,Greek  Yoghurt Plain,907g,7.00,8.00,d\n"  # size appended, spaces collapsed
        "102,Coles,Salted Butter,,4.00,4.00,d\n"  # no size
        "103,Bega,Tasty Cheese,500g,6.00,6.00,d\n"  # no hierarchy row
        ",Nobody,Nameless Product,1kg,1.00,1.00,d\n"  # no prodid
    ),
    "Coles/03-09-2025/Dairy/1_hier.csv": COLES_HIER
    + (
        '100,Milk,Full Cream Milk,"Dairy, Eggs & Fridge",1,2,3\n'
        "100,Long Life Milk,UHT,Pantry,4,5,6\n"  # a second shelf: the first row wins
        '101,Yoghurt,Greek & Natural,"Dairy, Eggs & Fridge",1,2,3\n'
        '102,Butter,,"Dairy, Eggs & Fridge",1,2,3\n'  # empty level dropped
    ),
    "Coles/03-09-2025/Pantry/2_product.csv": COLES_PRODUCT
    + ("200,John West,Tuna Multipack Springwater,4x95g,6.00,7.50,d\n201,,Plain Flour,1kg,1.50,1.50,d\n"),
    "Coles/03-09-2025/Pantry/2_hier.csv": COLES_HIER
    + "200,Canned Fish,Tuna,Pantry,1,2,3\n201,Baking,Flour,Pantry,1,2,3\n",
    "Coles/03-09-2025/Pantry/10_product.csv": COLES_PRODUCT  # page 10 comes after page 2
    + "200,John West,Tuna Page Ten,4x95g,6.00,7.50,d\n202,Coles,,500g,1.00,1.00,d\n",
    "Coles/03-09-2025/Pantry/10_hier.csv": COLES_HIER + "200,X,Y,Z,1,2,3\n202,Baking,Sugar,Pantry,1,2,3\n",
    "Coles/28-08-2025/Pantry/1_product.csv": COLES_PRODUCT
    + "200,John West,Tuna Old Week,4x95g,6.00,7.50,d\n300,Arnott's,Tim Tam Original,200g,4.00,5.00,d\n",
    "Coles/28-08-2025/Pantry/1_hier.csv": COLES_HIER
    + "200,X,Y,Z,1,2,3\n300,Biscuits,Chocolate Biscuits,Pantry,1,2,3\n",
    "Coles/10-08-2025/Pantry/1_product.csv": COLES_PRODUCT  # no _hier.csv for this page at all
    + "300,Arnott's,Tim Tam Oldest,200g,4.00,5.00,d\n400,Kellogg's,Corn Flakes,380g,5.00,5.00,d\n",
    "Coles/03-09-2025 backup/Pantry/1_product.csv": COLES_PRODUCT + "500,Backup,Should Not Appear,1kg,1,1,d\n",
    "Coles/03-09-2025 backup/Pantry/1_hier.csv": COLES_HIER + "500,A,B,C,1,2,3\n",
}


@pytest.mark.parametrize("kind", ["folder", "git"])
def test_australia_coles_newest_week_first_size_appended_rows_without_hierarchy_skipped(
    tmp_path: Path, kind: str
) -> None:
    src, commit = source_of(kind, tmp_path, COLES_SOURCE)
    out = tmp_path / "out"

    stdout = succeeded(convert("australia_coles.py", src, out))

    assert read_lines(out / "catalog.csv") == [
        CATALOG_HEADER,
        '100,Full Cream Milk 2L,Dairy Farmers,"Dairy, Eggs & Fridge > Full Cream Milk > Milk"',
        '101,Greek Yoghurt Plain 907g,Chobani,"Dairy, Eggs & Fridge > Greek & Natural > Yoghurt"',
        '102,Salted Butter,Coles,"Dairy, Eggs & Fridge > Butter"',
        "200,Tuna Multipack Springwater 4x95g,John West,Pantry > Tuna > Canned Fish",
        "201,Plain Flour 1kg,,Pantry > Flour > Baking",
        "300,Tim Tam Original 200g,Arnott's,Pantry > Chocolate Biscuits > Biscuits",
        "",
    ]
    assert stdout == [
        "australia-coles from Coles/<week>/<department>/<page>_{product,hier}.csv: rows read 13, written 6, skipped 7",
        skipped(3, "product seen before (another page, department or an older week)"),
        skipped(2, "no category (no hierarchy row)"),
        skipped(1, "no name"),
        skipped(1, "no prodid"),
        "  product files not read (not in a dated week folder): 1",
        "  weeks read: 03-09-2025, 10-08-2025, 28-08-2025",
        *summary(6, 5, 6, 13, 3, out / "catalog.csv", commit),
    ]


# --- russia-uhtt ----------------------------------------------------------------------------------

UHTT_HEADER = "ID\tUPCEAN\tName\tCategoryID\tCategoryName\tBrandID\tBrandName"
FOOD = "Продукты питания"
# sha1(ID) mod 8 is 0 for the IDs 2, 6 and 18, and 3 for the ID 1.
UHTT_SOURCE: dict[str, str | bytes] = {
    "DATA/uhtt_barcode_ref_0001.csv": "\n".join(
        [
            UHTT_HEADER,
            f"2\t4791029011134\tЧай mabroc Крем карамель жб 125г\t10\t{FOOD} (folder)/Чай (folder)/Чай черный"
            "\t5\tmabroc",
            f"1\t4600000000001\tМёд  липовый 250г\t11\t{FOOD} (folder)/Мёд\t6\tБабушкин",
            "3\t4600000000003\tМыло детское\t12\tБытовая химия (folder)/Мыло\t7\tНевская косметика",
            f"4\t4600000000004\tХлеб бородинский\t13\t{FOOD} (folder)/Хлеб\t0\tКаравай",
            f"5\t4600000000005\tLipton Yellow Label\t10\t{FOOD} (folder)/Чай (folder)/Чай черный\t8\tLipton",
            f"7\t4600000000007\tСок яблочный\t14\t{FOOD} (folder)/Соки\t9\t",
            "9\t4600000000009\ttoo few cells",
            f"6\t4600000000006\tСоль поваренная Экстра 1кг\t15\t{FOOD}\t10\tИлецк",
            "",
        ]
    ),
    # A byte-order mark and CRLF line ends: the header is still recognised and no cell keeps a "\r".
    "DATA/uhtt_barcode_ref_0002.csv": (
        "\ufeff"
        + "\r\n".join(
            [
                UHTT_HEADER,
                f"18\t8714599101605\tКофе  Jacobs Monarch 95г\t16\t{FOOD} (folder)/Кофе (folder)/"
                "Кофе растворимый>сублимированный\t11\t Jacobs ",
                f"2\t4791029011134\tЧай mabroc повтор\t10\t{FOOD} (folder)/Чай\t5\tmabroc",
                f"8\t4600000000008\t \t17\t{FOOD} (folder)/Хлеб\t12\tКаравай",
                "",
            ]
        )
    ).encode("utf-8"),
    "DATA/uhtt_barcode_ref_1.csv": f"11\t1\tНе читается\t1\t{FOOD}\t1\tБренд\n",  # not NNNN: not read
    "DATA/readme.txt": "not read\n",
}
UHTT_ROWS = {
    "2": "2,Чай mabroc Крем карамель жб 125г,mabroc,Продукты питания > Чай > Чай черный",
    "1": "1,Мёд липовый 250г,Бабушкин,Продукты питания > Мёд",
    "6": "6,Соль поваренная Экстра 1кг,Илецк,Продукты питания",
    "18": "18,Кофе Jacobs Monarch 95г,Jacobs,Продукты питания > Кофе > Кофе растворимый/сублимированный",
}
UHTT_SKIPPED = [
    skipped(2, "food, no brand"),
    skipped(1, "ID seen before"),
    skipped(1, "food, name without Cyrillic letters"),
    skipped(1, "food, no name"),
]
UHTT_SKIPPED_TAIL = [skipped(1, "not 7 tab-separated cells"), skipped(1, f"not under {FOOD} (food)")]


@pytest.mark.parametrize("kind", ["folder", "git"])
def test_russia_uhtt_food_with_brand_and_cyrillic_name_all_kept_with_sample_1(tmp_path: Path, kind: str) -> None:
    src, commit = source_of(kind, tmp_path, UHTT_SOURCE)
    out = tmp_path / "out"

    stdout = succeeded(convert("russia_uhtt.py", src, out, "--sample", "1"))

    assert read_lines(out / "catalog.csv") == [CATALOG_HEADER, *UHTT_ROWS.values(), ""]
    assert stdout == [
        "russia-uhtt from DATA/uhtt_barcode_ref_NNNN.csv: rows read 11, written 4, skipped 7",
        *UHTT_SKIPPED,
        *UHTT_SKIPPED_TAIL,
        "  data files: 2 listed, 0 absent from this copy",
        *summary(4, 4, 4, 6, 3, out / "catalog.csv", commit),
    ]


@pytest.mark.parametrize("kind", ["folder", "git"])
def test_russia_uhtt_default_keeps_one_in_8_by_sha1_of_id(tmp_path: Path, kind: str) -> None:
    src, commit = source_of(kind, tmp_path, UHTT_SOURCE)
    out = tmp_path / "out"

    stdout = succeeded(convert("russia_uhtt.py", src, out))

    assert read_lines(out / "catalog.csv") == [CATALOG_HEADER, UHTT_ROWS["2"], UHTT_ROWS["6"], UHTT_ROWS["18"], ""]
    assert stdout == [
        "russia-uhtt from DATA/uhtt_barcode_ref_NNNN.csv: rows read 11, written 3, skipped 8",
        *UHTT_SKIPPED,
        skipped(1, "kept food row left out of the 1-in-8 sample"),
        *UHTT_SKIPPED_TAIL,
        "  data files: 2 listed, 0 absent from this copy",
        *summary(3, 3, 3, 5, 3, out / "catalog.csv", commit),
    ]


# --- queries-ru-x5 --------------------------------------------------------------------------------


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)


X5_TRAIN = jsonl(
    {"text": "мороженое umka", "labels": [[0, 9, "B-TYPE"], [10, 14, "B-BRAND"]], "id": 1, "extra": "dropped"},
    # the first span takes in the no-break space after the word: shrunk to [0, 3]
    {
        "text": "сыр\u00a0 hochland 45%",
        "labels": [[0, 4, "B-TYPE"], [5, 13, "B-BRAND"], [14, 17, "B-PERCENT"]],
        "id": 2,
    },
    "",
    {"text": "хлеб", "labels": [[0, 4, "O"], [5, 9, "O"]], "id": 3},  # a span outside the text
    "{not json",
    "[1, 2]",
    {"text": "  ", "labels": [[0, 1, "O"]], "id": 5},
    {"text": "кола", "labels": [[0, 4, "B-TYPE"]], "id": "6"},
    {"text": "кола", "labels": [], "id": 7},
    {"text": "кола", "labels": [[0, 4]], "id": 8},
    {"text": "кола зеро", "labels": [[0, 6, "B-TYPE"], [5, 9, "I-TYPE"]], "id": 9},
    {"text": "кола", "labels": [[0, 4, "B-COLOR"]], "id": 10},
    {"text": "a \u00a0b", "labels": [[0, 1, "O"], [1, 3, "O"], [3, 4, "O"]], "id": 11},
    {"text": "молоко 1 л", "labels": [[0, 6, "B-TYPE"], [7, 8, "B-VOLUME"], [9, 10, "I-VOLUME"]], "id": 12},
)
X5_VAL = jsonl(
    {"text": "pepsi", "labels": [[0, 5, "B-BRAND"]], "id": 1},  # id already used in train
    {"text": "сок добрый 1л", "labels": [[0, 3, "B-TYPE"], [4, 10, "B-BRAND"], [11, 13, "B-VOLUME"]], "id": 20},
    {"text": "сок", "labels": [[0, 3, "B-TYPE"]], "id": True},
)


def test_queries_ru_x5_checks_each_line_and_shrinks_spaced_spans(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"dataset/train_lct.jsonl": X5_TRAIN, "dataset/val_lct.jsonl": X5_VAL})
    out = tmp_path / "out"

    stdout = succeeded(convert("queries_ru_x5.py", src, out))

    assert read_lines(out / "train_lct.jsonl") == [
        '{"text": "мороженое umka", "labels": [[0, 9, "B-TYPE"], [10, 14, "B-BRAND"]], "id": 1}',
        '{"text": "сыр\u00a0 hochland 45%", "labels": [[0, 3, "B-TYPE"], [5, 13, "B-BRAND"], [14, 17, "B-PERCENT"]], '
        '"id": 2}',
        '{"text": "молоко 1 л", "labels": [[0, 6, "B-TYPE"], [7, 8, "B-VOLUME"], [9, 10, "I-VOLUME"]], "id": 12}',
        "",
    ]
    assert read_lines(out / "val_lct.jsonl") == [
        '{"text": "сок добрый 1л", "labels": [[0, 3, "B-TYPE"], [4, 10, "B-BRAND"], [11, 13, "B-VOLUME"]], "id": 20}',
        "",
    ]
    assert stdout == [
        "queries-ru-x5 from dataset/{train,val}_lct.jsonl: rows read 16, written 4, skipped 12",
        skipped(2, "id not an integer"),
        skipped(1, "a label is not [start, end, label]"),
        skipped(1, "a span covers only spaces"),
        skipped(1, "a span lies outside the text"),
        skipped(1, "id seen before"),
        skipped(1, "no labels"),
        skipped(1, "no text"),
        skipped(1, "not JSON"),
        skipped(1, "not a JSON object"),
        skipped(1, "spans overlap or are out of order"),
        skipped(1, "unknown label 'B-COLOR'"),
        "  queries with a span trimmed of a surrounding space (kept): 1",
        "  train_lct.jsonl: 3 queries, 8 labelled words",
        "  val_lct.jsonl: 1 queries, 3 labelled words",
        f"  source commit: {PLAIN}",
    ]
    assert sorted(os.listdir(out)) == ["train_lct.jsonl", "val_lct.jsonl"]


def test_queries_ru_x5_missing_split_leaves_both_old_outputs(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"dataset/train_lct.jsonl": X5_TRAIN})
    out = write_tree(tmp_path / "out", {"train_lct.jsonl": "old train\n", "val_lct.jsonl": "old val\n"})

    done = convert("queries_ru_x5.py", src, out)

    assert done.returncode == 1
    assert done.stderr.strip() == f"{src}: no dataset/val_lct.jsonl at {PLAIN}"
    assert sorted(os.listdir(out)) == ["train_lct.jsonl", "val_lct.jsonl"]  # no temporary file left
    assert (out / "val_lct.jsonl").read_text(encoding="utf-8") == "old val\n"
    assert (out / "train_lct.jsonl").read_text(encoding="utf-8") == "old train\n"


def test_queries_ru_x5_line_separator_inside_a_query_is_not_a_line_break(tmp_path: Path) -> None:
    record = {"text": "сок\u2028яблочный", "labels": [[0, 3, "B-TYPE"], [4, 12, "O"]], "id": 1}
    src = write_tree(tmp_path / "src", {"dataset/train_lct.jsonl": jsonl(record), "dataset/val_lct.jsonl": ""})
    out = tmp_path / "out"

    stdout = succeeded(convert("queries_ru_x5.py", src, out))

    assert stdout[0] == "queries-ru-x5 from dataset/{train,val}_lct.jsonl: rows read 1, written 1, skipped 0"
    assert [json.loads(line) for line in read_lines(out / "train_lct.jsonl")[:-1]] == [record]


# --- every converter: sources that are not one ----------------------------------------------------


@pytest.mark.parametrize("script", CONVERTERS)
@pytest.mark.parametrize("what", ["missing", "file"])
def test_source_neither_git_dir_nor_folder_is_a_clear_error(tmp_path: Path, script: str, what: str) -> None:
    src = tmp_path / "source"
    if what == "file":
        src.write_text("not a repository\n", encoding="utf-8")
    out = write_tree(tmp_path / "out", {"catalog.csv": "previous output\n"})

    done = convert(script, src, out)

    assert done.returncode == 1
    assert done.stderr.strip() == f"{src}: neither a git directory nor a folder"
    assert sorted(os.listdir(out)) == ["catalog.csv"]
    assert (out / "catalog.csv").read_text(encoding="utf-8") == "previous output\n"


# --- the atomic write in _common ------------------------------------------------------------------


@pytest.fixture
def common() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("realdata_common_under_test", SCRIPTS / "_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_write_csv_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path, common: ModuleType) -> None:
    target = tmp_path / "catalog.csv"
    target.write_text("previous output\n", encoding="utf-8")

    def rows() -> Iterator[tuple[str, ...]]:
        yield ("1", "Milk", "", "Dairy")
        raise RuntimeError("source broke off")

    with pytest.raises(RuntimeError, match="source broke off"):
        common.write_csv(target, ("product_id", "name", "brand", "category_path"), rows())

    assert sorted(os.listdir(tmp_path)) == ["catalog.csv"]
    assert target.read_text(encoding="utf-8") == "previous output\n"

    common.write_csv(target, ("a", "b"), [("1", 'say "hi", twice')])
    assert sorted(os.listdir(tmp_path)) == ["catalog.csv"]
    assert target.read_bytes() == b'a,b\n1,"say ""hi"", twice"\n'
