// Reader page: keyboard shortcuts, window/level (rendered by the server), zoom. No third-party code.
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  var img = document.getElementById("study-image");
  if (!form || !img) { return; }
  var wc = document.getElementById("wc");
  var ww = document.getElementById("ww");
  var wcField = document.getElementById("window-center-field");
  var wwField = document.getElementById("window-width-field");
  var status = document.getElementById("status");
  var presets = Array.prototype.slice.call(document.querySelectorAll("button.preset"));
  var presetIndex = 0;
  var zoom = 1.0;
  var submitted = false;

  function setWindow(center, width) {
    // center/width in the image's units (HU for CT); empty = the image's default window
    var c = center === null ? "" : String(Math.round(center * 100) / 100);
    var w = width === null ? "" : String(Math.round(Math.max(width, 1e-3) * 100) / 100);
    wc.value = c; ww.value = w; wcField.value = c; wwField.value = w;
    var src = img.getAttribute("data-src");
    img.src = c === "" ? src : src + "?wc=" + encodeURIComponent(c) + "&ww=" + encodeURIComponent(w);
  }

  function applyPreset(button) {
    if (button.getAttribute("data-default")) { setWindow(null, null); return; }
    setWindow(parseFloat(button.getAttribute("data-center")), parseFloat(button.getAttribute("data-width")));
  }

  presets.forEach(function (b, i) {
    b.addEventListener("click", function () { presetIndex = i; applyPreset(b); });
  });
  document.getElementById("apply-window").addEventListener("click", applyTyped);

  function applyTyped() {
    var c = parseFloat(wc.value), w = parseFloat(ww.value);
    if (wc.value === "" && ww.value === "") { setWindow(null, null); return; }
    if (!isFinite(c) || !isFinite(w) || w <= 0) { status.textContent = "Window: give a center and a width > 0."; return; }
    status.textContent = "";
    setWindow(c, w);
  }

  function setZoom(z) {
    zoom = Math.min(16, Math.max(1 / 16, z));
    if (img.naturalWidth) { img.style.width = Math.round(img.naturalWidth * zoom) + "px"; }
  }
  img.addEventListener("load", function () { setZoom(zoom); });
  document.getElementById("zoom-in").addEventListener("click", function () { setZoom(zoom * 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { setZoom(zoom / 2); });
  document.getElementById("zoom-reset").addEventListener("click", function () { setZoom(1); });

  // drag on the image: horizontal = width, vertical = center (relative steps; the server renders on release)
  var drag = null;
  img.addEventListener("mousedown", function (e) {
    var c = parseFloat(wc.value), w = parseFloat(ww.value);
    if (!isFinite(c) || !isFinite(w)) { c = 127.5; w = 255; }  // unknown default: start from the 8-bit range
    drag = { x: e.clientX, y: e.clientY, c: c, w: w };
    e.preventDefault();
  });
  window.addEventListener("mousemove", function (e) {
    if (!drag) { return; }
    var scale = Math.max(drag.w, 1) / 200;
    wc.value = String(Math.round((drag.c - (e.clientY - drag.y) * scale) * 100) / 100);
    ww.value = String(Math.round(Math.max(drag.w + (e.clientX - drag.x) * scale, 1e-3) * 100) / 100);
  });
  window.addEventListener("mouseup", function () { if (drag) { drag = null; applyTyped(); } });

  function check(id) { var el = document.getElementById(id); if (el) { el.checked = true; } }

  form.addEventListener("submit", function (e) {
    if (submitted) { e.preventDefault(); return; }
    submitted = true;
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var typing = e.target === wc || e.target === ww;
    if (typing) {
      if (e.key === "Enter") { e.preventDefault(); applyTyped(); }
      return;
    }
    var k = e.key;
    if (k === "r" || k === "R") { check("answer-real"); }
    else if (k === "s" || k === "S") { check("answer-synthetic"); }
    else if (k >= "1" && k <= "5" && k.length === 1) { check("confidence-" + k); }
    else if (k === "l" || k === "L") {
      var lesion = document.getElementById("lesion");
      if (lesion) { lesion.checked = !lesion.checked; }
    }
    else if (k === "Enter") {
      e.preventDefault();
      if (form.reportValidity()) { form.requestSubmit(); }
      else { status.textContent = "Choose real or synthetic (R / S) and a confidence (1-5)."; }
    }
    else if (k === "d" || k === "D") { setWindow(null, null); presetIndex = 0; }
    else if (k === "w" || k === "W") { presetIndex = (presetIndex + 1) % presets.length; applyPreset(presets[presetIndex]); }
    else if (k === "+" || k === "=") { setZoom(zoom * 2); }
    else if (k === "-") { setZoom(zoom / 2); }
    else if (k === "0") { setZoom(1); }
    else { return; }
    e.preventDefault();
  });
})();
