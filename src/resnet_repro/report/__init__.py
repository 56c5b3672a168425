"""The report stage: the paper's numbers as data (`paper`) beside what each run measured, its metrics
files read and checked (`measured`); the study tables (`study`), the paper's claims judged (`claims`)
and the paper-style figures (`figures`)."""
