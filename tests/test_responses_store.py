"""The Responses API store: bounded by age and by size, per owner, on one SQLite file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast.api.responses_store import ResponseStore, owner_of

if TYPE_CHECKING:
    from pathlib import Path


def response(ident: str, text: str = "x") -> dict[str, object]:
    return {"id": ident, "object": "response", "output_text": text}


def test_the_oldest_go_first_past_the_size_bound(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "responses.db", max_age=3600, max_bytes=2000)
    owner = owner_of("key-a")
    for index in range(10):
        store.put(owner, response(f"resp_{index}", "y" * 300), [])
    kept = [i for i in range(10) if store.get(owner, f"resp_{i}") is not None]
    assert kept  # the newest are kept...
    assert kept == list(range(10 - len(kept), 10))  # ...and only the newest
    assert len(kept) < 10
    store.close()


def test_responses_older_than_the_age_bound_are_gone(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    young = ResponseStore(path, max_age=3600, max_bytes=10**6)
    young.put(owner_of("k"), response("resp_old"), [{"type": "message"}])
    assert young.get(owner_of("k"), "resp_old") is not None
    young.close()
    strict = ResponseStore(
        path, max_age=0, max_bytes=10**6
    )  # everything already written is too old
    assert strict.get(owner_of("k"), "resp_old") is None
    strict.put(owner_of("k"), response("resp_new"), [])  # a write prunes what is past the age
    strict.close()
    young = ResponseStore(path, max_age=3600, max_bytes=10**6)
    assert young.get(owner_of("k"), "resp_old") is None
    young.close()


def test_a_response_is_its_owners_only(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "responses.db", max_age=3600, max_bytes=10**6)
    store.put(owner_of("alice"), response("resp_1"), [])
    assert store.get(owner_of("bob"), "resp_1") is None
    assert not store.delete(owner_of("bob"), "resp_1")
    assert store.get(owner_of("alice"), "resp_1") is not None
    assert store.delete(owner_of("alice"), "resp_1")
    assert store.get(owner_of("alice"), "resp_1") is None
    store.close()
