"""The HTML report: the search's figures and page (`search.py`), the final step's sections
(`final.py`)."""
