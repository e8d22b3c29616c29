"""Build the bundled text samples from the reference data in ../shared/data (run once; the
results are committed so a fresh clone needs no ../shared).

python -m sentiment.samples --shared ../shared/data

- data/sentiment/financial_headlines.csv.gz: the MIT "twitter-financial-news-sentiment" headlines
  (text, label: 0 bearish, 1 bullish, 2 neutral), unchanged.
- data/news/crypto_headlines.csv.gz: the crypto-news titles (2021-10..2022-07) tagged with the
  symbols they name, one row per (headline, symbol): published_at (UTC), symbol, title, source.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEADLINES_FILE = PROJECT_ROOT / "data" / "sentiment" / "financial_headlines.csv.gz"
NEWS_FILE = PROJECT_ROOT / "data" / "news" / "crypto_headlines.csv.gz"

# Words that tie a headline to a bundled symbol; whole words, case-insensitive.
SYMBOL_PATTERNS = {
    "BTC/USDT": r"\b(?:bitcoin|btc)\b",
    "ETH/USDT": r"\b(?:ethereum|ether|eth)\b",
    "ADA/USDT": r"\b(?:cardano|ada)\b",
    "DOGE/USDT": r"\b(?:dogecoin|doge)\b",
    "DOT/USDT": r"\b(?:polkadot|dot)\b",
}


def build_headlines(shared: Path) -> pd.DataFrame:
    """The labelled financial headlines, checked and unchanged."""
    frame = pd.read_csv(shared / "sentiment" / "twitter_financial_news_train.csv")
    if list(frame.columns) != ["text", "label"] or not frame["label"].isin([0, 1, 2]).all():
        raise ValueError("unexpected sentiment file layout; expected columns text,label in 0..2")
    return frame


def build_news(shared: Path) -> pd.DataFrame:
    """Crypto-news titles tagged with the symbols they mention, oldest first."""
    raw = pd.read_csv(shared / "news" / "cryptonews_2021-10_2022-07.csv", sep=";")
    raw = raw.dropna(subset=["title", "date"]).drop_duplicates(subset=["title"])
    # The source gives no zone; the times are taken as UTC.
    published = pd.to_datetime(raw["date"], format="%d-%m-%Y %H:%M", utc=True)
    rows = []
    for symbol, pattern in SYMBOL_PATTERNS.items():
        hit = raw["title"].str.contains(pattern, flags=re.IGNORECASE, regex=True)
        rows.append(
            pd.DataFrame(
                {
                    "published_at": published[hit].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "symbol": symbol,
                    "title": raw.loc[hit, "title"].str.strip(),
                    "source": raw.loc[hit, "source"],
                }
            )
        )
    return pd.concat(rows).sort_values(["published_at", "symbol"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m sentiment.samples", description=__doc__)
    p.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    for frame, path in (
        (build_headlines(args.shared), HEADLINES_FILE),
        (build_news(args.shared), NEWS_FILE),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
        print(f"{path.relative_to(PROJECT_ROOT)}: {len(frame)} rows")


if __name__ == "__main__":
    main()
