"""What a good builder would answer for the telemetry-collection-v4 phases (test data).

The contents are small but real: the modules import and work, the tests pass under pytest,
so verification in the end-to-end tests runs for real.
"""

from __future__ import annotations

import json

BASE = "examples/telemetry_utils/"

FILES: dict[str, str] = {
    "string_helper.py": (
        '"""String helpers."""\n\n\ndef capitalize_words(text: str) -> str:\n'
        '    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))\n\n\n'
        "def reverse_string(text: str) -> str:\n    return text[::-1]\n"
    ),
    "number_helper.py": (
        '"""Number helpers."""\n\n\ndef is_even(n: int) -> bool:\n    return n % 2 == 0\n\n\n'
        "def is_prime(n: int) -> bool:\n    if n < 2:\n        return False\n"
        "    return all(n % d for d in range(2, int(n**0.5) + 1))\n\n\n"
        "def factorial(n: int) -> int:\n    result = 1\n    for k in range(2, n + 1):\n"
        "        result *= k\n    return result\n"
    ),
    "list_helper.py": (
        '"""List helpers."""\n\n\ndef chunk(items, size):\n'
        "    return [items[i : i + size] for i in range(0, len(items), size)]\n\n\n"
        "def flatten(nested):\n    return [x for part in nested for x in part]\n\n\n"
        "def unique(items):\n    return list(dict.fromkeys(items))\n\n\n"
        "def group_by(items, key):\n    groups = {}\n    for item in items:\n"
        "        groups.setdefault(key(item), []).append(item)\n    return groups\n"
    ),
    "date_helper.py": (
        '"""Date helpers."""\n\nfrom datetime import date, datetime, timedelta\n\n\n'
        "def format_date(d: date) -> str:\n    return d.isoformat()\n\n\n"
        'def parse_date(text: str) -> date:\n    return datetime.strptime(text, "%Y-%m-%d").date()\n'
        "\n\ndef add_days(d: date, days: int) -> date:\n    return d + timedelta(days=days)\n\n\n"
        "def diff_days(a: date, b: date) -> int:\n    return (b - a).days\n"
    ),
    "dict_helper.py": (
        '"""Dict helpers."""\n\n\ndef deep_merge(a, b):\n    out = dict(a)\n'
        "    for k, v in b.items():\n        if isinstance(v, dict) and isinstance(out.get(k), dict):\n"
        "            out[k] = deep_merge(out[k], v)\n        else:\n            out[k] = v\n"
        '    return out\n\n\ndef get_nested(d, path):\n    for part in path.split("."):\n'
        "        d = d[part]\n    return d\n\n\ndef set_nested(d, path, value):\n"
        '    *parents, last = path.split(".")\n    for part in parents:\n'
        "        d = d.setdefault(part, {})\n    d[last] = value\n\n\n"
        "def filter_keys(d, keys):\n    return {k: v for k, v in d.items() if k in keys}\n"
    ),
    "test_string_helper.py": (
        "from string_helper import capitalize_words, reverse_string\n\n\n"
        'def test_capitalize(words):\n    assert capitalize_words(words) == "Hello World"\n\n\n'
        'def test_reverse():\n    assert reverse_string("abc") == "cba"\n'
    ),
    "conftest.py": ('import pytest\n\n\n@pytest.fixture\ndef words():\n    return "hello world"\n'),
    "test_number_helper.py": (
        "from number_helper import factorial, is_even, is_prime\n\n\n"
        "def test_numbers():\n    assert is_even(4)\n    assert is_prime(7)\n"
        "    assert not is_prime(9)\n    assert factorial(5) == 120\n"
    ),
    "test_list_helper.py": (
        "from list_helper import chunk, flatten, group_by, unique\n\n\n"
        "def test_lists():\n    assert chunk([1, 2, 3], 2) == [[1, 2], [3]]\n"
        "    assert flatten([[1], [2, 3]]) == [1, 2, 3]\n    assert unique([1, 1, 2]) == [1, 2]\n"
        "    assert group_by([1, 2, 3], lambda x: x % 2) == {1: [1, 3], 0: [2]}\n"
    ),
    "README.md": "# telemetry_utils\n\nSmall helpers.\n\n```python\nfrom string_helper import reverse_string\n```\n",
    "file_helper.py": (
        '"""File helpers."""\n\nimport json\n\n\ndef read_json(path):\n'
        "    with open(path) as f:\n        return json.load(f)\n\n\n"
        'def write_json(path, data):\n    with open(path, "w") as f:\n        json.dump(data, f)\n\n\n'
        "def read_lines(path):\n    with open(path) as f:\n        return f.read().splitlines()\n\n\n"
        'def write_lines(path, lines):\n    with open(path, "w") as f:\n'
        '        f.write("\\n".join(lines))\n'
    ),
}


def reply_for(deliverables: list[str]) -> str:
    """A JSON reply (the format the prompt asks for) holding every deliverable's content."""
    files = [{"path": d, "content": FILES[d.removeprefix(BASE)]} for d in deliverables]
    return json.dumps({"files": files})


def markdown_reply_for(deliverables: list[str]) -> str:
    """The same files as markdown blocks introduced by their paths, as chat models often reply."""
    parts = ["Here are the files.\n"]
    for d in deliverables:
        parts.append(f"### {d}\n\n```python\n{FILES[d.removeprefix(BASE)]}```\n")
    return "\n".join(parts)
