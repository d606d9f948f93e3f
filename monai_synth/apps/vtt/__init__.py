"""The reader study of seed 001 (a Visual Turing Test): a blinded reading web app and its statistical report.

``python -m monai_synth.vtt serve --real PATH --synthetic PATH --db study.db`` serves the reading; ``python -m
monai_synth.vtt report --db study.db --out DIR`` writes the report. See docs/reader_study.md.
"""

from __future__ import annotations

from .db import Answer, NextItem, ReaderProgress, Session, StudyDB, StudyMismatchError, UnknownItemError
from .items import REAL, SYNTHETIC, TRUTHS, StudyItem, discover_images
from .render import DisplayImage, DisplayImageCache, encode_png, load_display_image, render_png
from .report import ReportFiles, agreement, build_report, plot_report, write_report
from .sequence import balanced_counts, draw_study_set, new_token, reader_order
from .server import StudyServer, create_app
from .stats import accuracy_test, calibration, cohen_kappa, fleiss_kappa, sensitivity_specificity, summarize
from .study import open_study
from .validation import InputError, parse_answer, parse_confidence, parse_lesion, parse_reader_name, parse_window
