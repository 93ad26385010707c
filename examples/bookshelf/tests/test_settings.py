from bookshelf.settings import Settings


def test_shelves_parse_from_json(monkeypatch):
    monkeypatch.setenv("BOOKSHELF_SHELVES", '["a", "b"]')
    assert Settings().shelves == ["a", "b"]
