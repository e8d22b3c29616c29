"""News sentiment: a transformers model the project fine-tunes itself, news sources, and hybrid
ML + sentiment signals for the API and backtests."""

from sentiment.hybrid import HybridWeights, combine_signal
from sentiment.model import SentimentAnalyzer, SentimentModelError
from sentiment.news import NewsInputError, NewsSourceError
from sentiment.strategy import SentimentMLStrategy

__all__ = [
    "HybridWeights",
    "NewsInputError",
    "NewsSourceError",
    "SentimentAnalyzer",
    "SentimentMLStrategy",
    "SentimentModelError",
    "combine_signal",
]
