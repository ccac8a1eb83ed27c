import threading

import pytest

from app.bounded import BoundedCache


def test_the_oldest_entry_goes_first_and_a_touched_one_stays() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    for i, key in enumerate("abc"):
        assert cache.put(key, i) == i
    cache.touch("a")  # read again: kept longest
    cache.put("d", 3)
    assert list(cache) == ["c", "a", "d"]
    assert "b" not in cache and cache.get("a") == 0
    cache.put("c", 9)  # replacing moves it to the back as well
    cache.put("e", 4)
    assert list(cache.items()) == [("d", 3), ("c", 9), ("e", 4)]
    cache.touch("gone")  # a key evicted meanwhile is no error


def test_reads_do_not_reorder() -> None:
    cache: BoundedCache[int, int] = BoundedCache(2)
    cache.put(1, 1)
    cache.put(2, 2)
    assert cache.get(1) == 1 and 1 in cache
    cache.put(3, 3)
    assert list(cache) == [2, 3]


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_threads_sharing_one_cache_keep_it_bounded_and_raise_nothing() -> None:
    cache: BoundedCache[tuple[int, int], int] = BoundedCache(50)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20_000):
                cache.put((n, i), i)
                cache.touch((n, i - 3))
                cache.get((n, i - 1))
        except BaseException as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) <= 50
