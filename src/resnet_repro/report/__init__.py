"""The report stage: the paper's numbers as data (`paper`), each run's metrics files read and checked
(`runs`), the study tables (`study`) and the paper-style figures (`figures`)."""
