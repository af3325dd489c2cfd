/* The dosing review page: T, N, U from the keyboard, the clip's speed, a pill's box on a frame.
   T saves at once; N and U pick the verdict and move to the reason (Enter there saves). */
(function () {
  "use strict";
  function ready() {
    var form = document.getElementById("verdict-form");
    var reason = document.getElementById("reason");
    var clip = document.getElementById("clip");
    var speed = document.getElementById("speed");
    if (speed && clip) {
      speed.addEventListener("change", function () { clip.playbackRate = parseFloat(speed.value); });
    }
    function choose(verdict) {
      var radio = form.querySelector('input[name="verdict"][value="' + verdict + '"]');
      radio.checked = true;
      limitReasons();
    }
    function limitReasons() {
      var picked = form.querySelector('input[name="verdict"]:checked');
      var verdict = picked ? picked.value : "";
      var groups = reason.querySelectorAll("optgroup");
      for (var i = 0; i < groups.length; i++) {
        var on = groups[i].getAttribute("data-verdict") === verdict;
        groups[i].disabled = !on;
        groups[i].hidden = !on;
      }
      var option = reason.options[reason.selectedIndex];
      if (option && option.parentNode.disabled) { reason.value = ""; }
      reason.required = verdict === "not_taken" || verdict === "unverifiable";
    }
    form.addEventListener("change", function (e) { if (e.target.name === "verdict") { limitReasons(); } });
    limitReasons();
    function typing(target) {
      return target && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(target.tagName) && target.type !== "radio";
    }
    document.addEventListener("keydown", function (e) {
      if (e.altKey || e.ctrlKey || e.metaKey || typing(e.target)) { return; }
      var key = e.key.toLowerCase();
      if (key === "t") { e.preventDefault(); choose("taken"); form.requestSubmit(); }
      else if (key === "n") { e.preventDefault(); choose("not_taken"); reason.focus(); }
      else if (key === "u") { e.preventDefault(); choose("unverifiable"); reason.focus(); }
    });
    reason.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && reason.value) { e.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener("submit", function () { document.body.setAttribute("data-submitting", "true"); });

    // A pill's box, drawn with the pointer on an evidence frame, sent in the frame's own pixels.
    var frames = document.querySelectorAll(".frame");
    for (var i = 0; i < frames.length; i++) { boxable(frames[i]); }
    function boxable(frame) {
      var img = frame.querySelector("img");
      var start = null, box = null;
      frame.addEventListener("pointerdown", function (e) {
        e.preventDefault();
        var r = img.getBoundingClientRect();
        start = { x: e.clientX - r.left, y: e.clientY - r.top };
        var old = document.querySelectorAll(".pill-box");
        for (var k = 0; k < old.length; k++) { old[k].remove(); }
        box = document.createElement("div");
        box.className = "pill-box";
        frame.appendChild(box);
        frame.setPointerCapture(e.pointerId);
      });
      frame.addEventListener("pointermove", function (e) {
        if (!start) { return; }
        var r = img.getBoundingClientRect();
        var x = Math.max(0, Math.min(e.clientX - r.left, r.width)), y = Math.max(0, Math.min(e.clientY - r.top, r.height));
        box.style.left = Math.min(x, start.x) + "px"; box.style.top = Math.min(y, start.y) + "px";
        box.style.width = Math.abs(x - start.x) + "px"; box.style.height = Math.abs(y - start.y) + "px";
      });
      frame.addEventListener("pointerup", function () {
        if (!start) { return; }
        start = null;
        var scale = img.naturalWidth / img.clientWidth;
        var px = function (v) { return Math.round(parseFloat(v || "0") * scale); };
        var w = px(box.style.width), h = px(box.style.height);
        if (w < 2 || h < 2) { box.remove(); return; }
        document.getElementById("box_step").value = frame.getAttribute("data-step");
        document.getElementById("box_x").value = px(box.style.left);
        document.getElementById("box_y").value = px(box.style.top);
        document.getElementById("box_w").value = w;
        document.getElementById("box_h").value = h;
        document.getElementById("box-info").textContent = "Pill box on " + frame.getAttribute("data-step").replace(/_/g, " ") +
          ": " + w + " × " + h + " px, saved with the verdict.";
      });
    }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", ready); } else { ready(); }
})();
