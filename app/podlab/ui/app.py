"""Application bootstrap: one QApplication, one asyncio loop on it (qasync), one main window.

`podlab --screenshot FILE [--page NAME] [--size WxH]` renders the window offscreen to a PNG
and exits: used by tests, by the README and by reviewers. `podlab [FILE.gguf...]` opens the
window, or hands the files to the window already open (one window per user), and imports them.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from podlab import __version__

if TYPE_CHECKING:
    import qasync
    from PySide6.QtWidgets import QApplication

    from podlab.core.lab import Lab
    from podlab.ui.main_window import MainWindow

DEFAULT_SIZE = (1280, 800)


def parse_gui_args(argv: list[str]) -> argparse.Namespace:
    from podlab.core.logs import add_log_level_option
    from podlab.ui.main_window import PAGE_KEYS

    parser = argparse.ArgumentParser(prog="podlab", description="Open the Podlab window.")
    parser.add_argument("--screenshot", metavar="FILE", help="render the window to a PNG and exit")
    parser.add_argument(
        "files", nargs="*", metavar="FILE.gguf", help="GGUF models to import (as `podlab FILE`)"
    )
    parser.add_argument(
        "--page", choices=PAGE_KEYS, help="page to show (default: the last one, or the Dashboard)"
    )
    parser.add_argument("--size", default="x".join(map(str, DEFAULT_SIZE)), metavar="WxH")
    add_log_level_option(parser)
    args = parser.parse_args(argv)
    try:
        width, height = (int(part) for part in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 1280x800, not {args.size!r}")
    if width < 200 or height < 150:
        parser.error("--size is too small (at least 200x150)")
    args.width, args.height = width, height
    return args


def run_gui(argv: list[str]) -> int:
    # No collections until the first paint: what start-up makes lives as long as the app
    # (frozen below), and collecting it now only delays the window.
    gc.disable()
    try:
        return _run_gui(argv)
    finally:
        gc.enable()


def _run_gui(argv: list[str]) -> int:
    args = parse_gui_args(argv)
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    from podlab.core.lab import Lab
    from podlab.core.logs import close_logging, configure_logging, hold_logging
    from podlab.core.paths import Locations
    from podlab.ui import background
    from podlab.ui.crash import ErrorReporter
    from podlab.ui.main_window import PAGE_KEYS, PAGES, MainWindow, window_icon
    from podlab.ui.single_instance import hand_over, launch_files, server_name
    from podlab.ui.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Podlab")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("io.github.podlab.Podlab")
    instance_name = server_name(Locations.default())
    files = launch_files(args.files)
    if not args.screenshot and hand_over(instance_name, files):
        print("podlab: handed over to the Podlab window already open")
        return 0
    lab = Lab.open()
    hold_logging(args.log_level)  # the file is opened after the first paint
    reporter = ErrorReporter(lab.locations.log_file, app)
    reporter.install()
    apply_theme(app, lab.settings.theme)
    window = MainWindow(lab)
    window.resize(args.width, args.height)
    remembered_page = None
    if not args.screenshot:  # screenshots stay the same whatever the user did last
        from podlab.ui.window_state import STATE_FILE_NAME, WindowStateKeeper

        keeper = WindowStateKeeper(window, lab.locations.state_dir / STATE_FILE_NAME)
        remembered_page = keeper.restore()
    first_page = args.page or ("models" if files else remembered_page) or "dashboard"
    quit_before_loop: list[bool] = []
    app.aboutToQuit.connect(lambda: quit_before_loop.append(True))
    if not args.screenshot:
        # Paint the window before asyncio and qasync are loaded: the user sees Podlab at once.
        # A page that can paint without the loop (the Dashboard) is in that first paint and
        # starts loading once the loop is set; any other fills in a moment later.
        background.hold_until_loop()
        if PAGES[PAGE_KEYS.index(first_page)].paints_before_loop:
            window.show_page_unfinished(first_page)
        window.show()
        app.processEvents()
        if quit_before_loop:  # closed or signalled already: nothing to run
            configure_logging(args.log_level, lab.locations)  # writes what was held
            close_logging()
            return 0
    # The icon's SVG loads the image plugin; the window manager takes it after the first paint.
    app.setWindowIcon(window_icon())
    configure_logging(args.log_level, lab.locations)

    import asyncio

    import qasync

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    reporter.install_loop(loop)
    background.loop_ready()
    window.show_page(first_page)
    # Everything made so far lives as long as the app: keep it out of the collector's full
    # passes, which otherwise stall a streaming render for 20-35 ms now and then.
    gc.freeze()
    gc.enable()
    if args.screenshot:
        return _screenshot(window, Path(args.screenshot), loop)

    from podlab.ui.engine_status import watch_engine
    from podlab.ui.notify import TaskNotifier
    from podlab.ui.single_instance import InstanceServer, open_launch_files

    keeper.watch()
    instance = InstanceServer(instance_name, window)
    instance.listen()
    instance.sig_launched.connect(lambda later: _on_later_launch(window, later))
    notifier = TaskNotifier(lab, window, tray=lambda: window.tray)
    window.on_close(notifier.detach)
    open_launch_files(window, files)
    _quit_on_signals(app)
    with loop:
        quit_event = asyncio.Event()
        app.aboutToQuit.connect(quit_event.set)
        background.start(watch_engine(window), "watch the container engine")
        loop.run_until_complete(quit_event.wait())
        loop.run_until_complete(_shutdown(lab))
    reporter.uninstall()
    close_logging()
    return 0


def _on_later_launch(window: MainWindow, files: list[str]) -> None:
    from podlab.ui.single_instance import bring_forward, open_launch_files

    bring_forward(window)
    open_launch_files(window, files)


def _quit_on_signals(app: QApplication) -> None:
    """Ctrl+C in the terminal and SIGTERM quit cleanly, through the same path as closing."""
    from PySide6.QtCore import QTimer

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: app.quit())
    # Python runs signal handlers only between bytecodes; a slow no-op tick gives it the chance
    # while Qt waits for events.
    tick = QTimer(app)
    tick.timeout.connect(lambda: None)
    tick.start(250)


async def _shutdown(lab: Lab) -> None:
    """Cancel and await everything still running, so Python warns about no pending task."""
    import asyncio

    from podlab.ui import background

    await lab.tasks.cancel_all()
    await asyncio.gather(*background.cancel_all(), return_exceptions=True)
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    lab.close()  # after the tasks: a stopped answer is written to the store first


def _screenshot(window: MainWindow, path: Path, loop: qasync.QEventLoop) -> int:
    """Show offscreen, let the page finish its first async load, grab and save."""
    window.show()
    with loop:
        loop.run_until_complete(_settle(window))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path), "PNG"):
        print(f"podlab: error: could not write {path}", file=sys.stderr)
        return 1
    print(path)
    return 0


async def _settle(window: MainWindow) -> None:
    """Wait for the engine check and for the shown page's `settle()` coroutine, if it has one."""
    import asyncio

    from podlab.ui.engine_status import refresh_engine_status
    from podlab.ui.page_host import SettlingPage

    await refresh_engine_status(window)
    page = window.page(window.current_page_key())
    if isinstance(page, SettlingPage):
        await page.settle()
    await asyncio.sleep(0.05)
