"""Leaderboards, paper tables and plots from the result store: ``harness leaderboard | table | plot``.

``selection`` (which runs count, their groups and labels, changed protocols), ``stats`` (paired tests,
Holm, ranks), ``render`` (numbers, notes, Markdown/LaTeX/CSV), ``leaderboard``, ``spec`` (table spec
files), ``bib`` (a spec's bibliography, its .bib file), ``tables`` (paper tables), ``plots`` and
``commands`` (the command line). Every generated file names the runs it came from (run ids and git
commits) and holds no timestamps or absolute paths, so regenerating from unchanged runs is
byte-identical.
"""
