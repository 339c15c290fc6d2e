"""Source documents: loading, splitting into numbered passages, and verifying the quotes members cite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from council.errors import InputError
from council.deliberation.sources import Passage, Source, load_sources, normalize, split_passages, verify_quote

ISS = ("Astronauts aboard the International Space Station report that the Great Wall is not visible "
       "to the naked eye from low Earth orbit.")
WIDTH = "The wall is mostly about 6 m wide, far narrower than the highways and airports seen from orbit."


def source(text: str, title: str = "doc") -> Source:
    return load_sources([text])[0].model_copy(update={"title": title})


def passage(text: str, pid: str = "S1") -> Passage:
    return Passage(passage_id=pid, source_id="x", position=0, text=text)


# ---------------------------------------------------------------------------------------------- splitting


def test_paragraphs_become_passages_with_inner_line_breaks_collapsed() -> None:
    text = f"{ISS}\n\n{WIDTH}\n   \n\tThird paragraph,\nwrapped over\n  two lines.\n\n\n"
    ps = split_passages([source(text)])
    assert [p.text for p in ps] == [ISS, WIDTH, "Third paragraph, wrapped over two lines."]
    assert [p.passage_id for p in ps] == ["S1", "S2", "S3"]
    assert [p.position for p in ps] == [0, 1, 2]


def test_long_paragraph_is_cut_at_sentence_boundaries_only() -> None:
    sentences = [f"Sentence number {i} says something about the wall and its {i * 7} towers." for i in range(12)]
    para = " ".join(sentences)
    assert len(para) > 700
    ps = split_passages([source(para)], max_chars=200)
    assert len(ps) > 1
    for p in ps:
        assert len(p.text) <= 200
        # every passage is a run of whole sentences
        assert re.fullmatch(r"(Sentence number \d+ says something about the wall and its \d+ towers\. ?)+", p.text)
    assert " ".join(p.text for p in ps) == para
    # greedy packing: no passage could have taken the next sentence
    for a, b in zip(ps, ps[1:]):
        first_of_b = b.text.split(". ")[0] + "."
        assert len(a.text) + 1 + len(first_of_b) > 200


def test_default_limit_splits_long_paragraphs() -> None:
    para = " ".join(f"Claim {i} is a fairly ordinary sentence written to fill some space here." for i in range(30))
    ps = split_passages([source(para)])
    assert len(ps) >= 3
    assert all(len(p.text) <= 700 for p in ps)
    assert " ".join(p.text for p in ps) == para


def test_one_sentence_longer_than_the_limit_is_kept_whole() -> None:
    long_sentence = "word " * 60 + "end."
    ps = split_passages([source(f"Short one. {long_sentence.strip()} After it.")], max_chars=100)
    assert [p.text for p in ps] == ["Short one.", long_sentence.strip(), "After it."]


def test_numbering_runs_across_documents() -> None:
    a = load_sources([f"{ISS}\n\n{WIDTH}"])[0]
    b = load_sources(["A second document with one paragraph."])[0]
    ps = split_passages([a, b])
    assert [(p.passage_id, p.source_id, p.position) for p in ps] == [
        ("S1", a.source_id, 0), ("S2", a.source_id, 1), ("S3", b.source_id, 0)]
    assert ps[2].text == "A second document with one paragraph."


def test_passage_keys_are_stable_content_hashes() -> None:
    doc = load_sources([f"{ISS}\n\n{WIDTH}"])[0]
    first = split_passages([doc])
    again = split_passages(load_sources([f"{ISS}\n\n{WIDTH}"]))
    assert [p.key for p in first] == [p.key for p in again]
    assert all(re.fullmatch(r"[0-9a-f]{16}", p.key) for p in first)
    assert len({p.key for p in first}) == 2
    # Another document in front renumbers the passages (S3, S4) but does not change their keys.
    other = load_sources(["Some preface.\n\nAnd more preface."])[0]
    shifted = split_passages([other, doc])
    assert [p.passage_id for p in shifted[2:]] == ["S3", "S4"]
    assert [p.key for p in shifted[2:]] == [p.key for p in first]
    # A key hashes its document as well as its own text: an edited document gets new keys throughout.
    changed = split_passages(load_sources([f"{ISS}\n\n{WIDTH} Extra."]))
    assert changed[0].text == first[0].text
    assert not {p.key for p in changed} & {p.key for p in first}


def test_source_id_is_a_content_hash() -> None:
    a, b, c = load_sources([ISS, ISS, WIDTH])
    assert a.source_id == b.source_id != c.source_id
    assert re.fullmatch(r"[0-9a-f]{16}", a.source_id)


# ---------------------------------------------------------------------------------------- quote checking


def test_true_quote_is_verified() -> None:
    assert verify_quote("the Great Wall is not visible to the naked eye", passage(ISS))


def test_case_and_whitespace_differences_do_not_matter() -> None:
    assert verify_quote("THE GREAT WALL   is not\nvisible to\tthe naked eye", passage(ISS))


def test_typographic_quotes_and_dashes_are_folded() -> None:
    text = "The guide says “it’s not visible” from orbit — at least not unaided."
    p = passage(text)
    assert verify_quote("says \"it's not visible\" from orbit - at least", p)
    # and the other way round: a typographic quote against plain ASCII text
    assert verify_quote("“the great wall is not visible”", passage(ISS))
    assert verify_quote("the wall’s width", passage("We measured the wall's width twice."))


def test_surrounding_quote_marks_and_final_period_are_ignored() -> None:
    assert verify_quote('"from low Earth orbit."', passage(ISS))


def test_altered_quote_is_not_verified() -> None:
    p = passage(ISS)
    assert not verify_quote("the Great Wall is never visible to the naked eye", p)
    assert not verify_quote("the Great Wall is not visible to the naked eye from the Moon", p)
    assert not verify_quote("the Great Wall is visible to the naked eye", p)


def test_quote_from_another_passage_is_not_verified() -> None:
    s1, s2 = passage(ISS, "S1"), passage(WIDTH, "S2")
    quote = "far narrower than the highways and airports"
    assert verify_quote(quote, s2)
    assert not verify_quote(quote, s1)


def test_nonexistent_passage_is_not_verified() -> None:
    ps = {p.passage_id: p for p in split_passages(load_sources([ISS]))}
    assert not verify_quote("not visible to the naked eye", ps.get("S9"))
    assert verify_quote("not visible to the naked eye", ps.get("S1"))


def test_too_short_quote_is_not_verified() -> None:
    p = passage(ISS)
    assert not verify_quote("the", p)
    assert not verify_quote("", p)
    assert not verify_quote('"orbit."', p)  # 5 characters once the quote marks and period are stripped
    assert verify_quote("6 m wide", passage(WIDTH))  # 8 characters: long enough


def test_normalize() -> None:
    assert normalize("  A\u00a0“Quoted”\n\tText — here ") == 'a "quoted" text - here'


# ---------------------------------------------------------------------------------------------- loading


def test_load_from_files_and_strings(tmp_path: Path) -> None:
    f1 = tmp_path / "report.txt"
    f1.write_text(f"{ISS}\n\n{WIDTH}\n", encoding="utf-8")
    f2 = tmp_path / "notes.md"
    f2.write_text("Notes: the wall is long.", encoding="utf-8")
    srcs = load_sources([f1, "Inline text given as a string.", str(f2)])
    assert [(s.title, s.text) for s in srcs] == [
        ("report.txt", f"{ISS}\n\n{WIDTH}\n"),
        ("text 2", "Inline text given as a string."),
        ("notes.md", "Notes: the wall is long."),
    ]
    assert [p.passage_id for p in split_passages(srcs)] == ["S1", "S2", "S3", "S4"]


def test_multiline_and_long_strings_are_text() -> None:
    multi = f"{ISS}\n\n{WIDTH}"
    one_line = " ".join([ISS] * 4)  # longer than a file name may be: still the text itself
    assert len(one_line) > 255
    srcs = load_sources([multi, one_line])
    assert [s.text for s in srcs] == [multi, one_line]
    assert [s.title for s in srcs] == ["text 1", "text 2"]


def test_no_sources() -> None:
    assert load_sources(None) == []
    assert load_sources([]) == []
    assert split_passages([]) == []


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_string_source_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="source text 1 is empty"):
        load_sources([text])


def test_empty_file_is_an_input_error(tmp_path: Path) -> None:
    f = tmp_path / "blank.txt"
    f.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="blank.txt is empty"):
        load_sources([f])


def test_file_that_is_not_utf8_text_is_an_input_error(tmp_path: Path) -> None:
    f = tmp_path / "scan.txt"
    f.write_bytes(b"\xff\xfe\x00binary \x81\x82 garbage")
    with pytest.raises(InputError, match="cannot read it as UTF-8"):
        load_sources([f])


def test_missing_or_directory_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_sources([tmp_path / "missing.txt"])
    with pytest.raises(InputError, match="no such file"):
        load_sources([tmp_path])
