// The console's one script: live figures from the page's event stream, written as text.
// The stream closes while the tab is hidden or the operator pauses it, and for good on "bye".
"use strict";
(function () {
  const stream = document.body.dataset.stream;
  if (!stream) {
    return;
  }
  const state = document.getElementById("live-state");
  const pause = document.getElementById("pause");
  const changed = document.getElementById("changed");
  const actions = document.getElementById("actions");
  const shownStatus = document.body.dataset.status;
  let source = null;
  let paused = false;
  let ended = false;

  function say(text) {
    state.textContent = text;
  }

  function show(figures) {
    for (const element of document.querySelectorAll("[data-live]")) {
      const value = figures[element.dataset.live];
      if (value === undefined) {
        continue;
      }
      if (element.tagName === "METER") {
        element.value = Number(value);
      } else if (element.textContent !== String(value)) {
        element.textContent = String(value);
      }
    }
    const status = figures["job.status"];
    if (changed && status !== undefined && shownStatus && status !== shownStatus) {
      changed.hidden = false;
      if (actions) {
        actions.hidden = true; // they were for the state the page was loaded in
      }
    }
  }

  function close() {
    if (source !== null) {
      source.close();
      source = null;
    }
  }

  function open() {
    if (source !== null || paused || ended || document.hidden) {
      return;
    }
    source = new EventSource(stream);
    source.addEventListener("snapshot", function (event) {
      show(JSON.parse(event.data));
      say("live");
    });
    source.addEventListener("bye", function () {
      ended = true;
      close();
      show({ draining: "draining" });
      say("the gateway is stopping: figures no longer update");
    });
    source.addEventListener("error", function () {
      if (!ended) {
        say("reconnecting…");
      }
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      close();
    } else {
      open();
    }
  });
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (paused) {
      close();
      say("paused");
    } else {
      open();
    }
  });
  open();
})();
