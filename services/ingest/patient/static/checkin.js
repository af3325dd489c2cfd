/* The patient check-in page: record with MediaRecorder, review, send with a
 * resumable S3 multipart upload, then follow the check-in until it is done.
 *
 * The link's token arrives in the URL fragment (#token=...), is kept in this
 * tab's sessionStorage (so a reload keeps working) and removed from the address
 * bar. The recording is kept in IndexedDB from "Send" until S3 has it all, so a
 * dropped connection or a closed tab loses nothing.
 */
(function () {
  "use strict";

  var API = document.body.getAttribute("data-api");
  var PART_RETRIES = [1000, 2000, 4000];  // quick retries of one part before pausing
  var STATUS_POLL_MS = 2000;
  var KEEP_DAYS = 7;  // a saved recording older than this is deleted unsent

  var token = null;
  var session = null;
  var stream = null;
  var recorder = null;
  var recording = null;  // {blob, type, seconds, uploadId}
  var chunks = [];
  var stepIndex = 0;
  var steps = [];
  var timeline = [];  // [{step_id, kind, shown_at_ms}]: when each step appeared, from the recording's start
  var startedAt = 0;
  var timerHandle = null;
  var uploading = false;

  function $(id) { return document.getElementById(id); }

  function show(name) {
    var screens = document.querySelectorAll(".screen");
    for (var i = 0; i < screens.length; i++) { screens[i].hidden = screens[i].id !== "screen-" + name; }
    var heading = document.querySelector("#screen-" + name + " h1");
    if (heading) { heading.focus(); }
    document.body.setAttribute("data-screen", name);
  }

  function text(id, value) { $(id).textContent = value; }

  // --- the link ------------------------------------------------------------
  function readToken() {
    var match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash || "");
    if (match) {
      var value = decodeURIComponent(match[1]);
      try { sessionStorage.setItem("schizodot-checkin-token", value); } catch (e) { /* private mode */ }
      history.replaceState(null, "", window.location.pathname + window.location.search);
      return value;
    }
    try { return sessionStorage.getItem("schizodot-checkin-token"); } catch (e) { return null; }
  }

  function ApiError(status, detail) { this.status = status; this.detail = detail; }

  function api(method, path, body) {
    var options = { method: method, headers: { "Authorization": "Bearer " + token }, cache: "no-store" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(API + path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) { throw new ApiError(response.status, data.detail); }
        return data;
      });
    }, function () { throw new ApiError(0, "network"); });
  }

  function linkProblem(error) {
    if (error.status === 401) {
      text("invalid-reason", "This check-in link has expired or has already been used.");
    } else {
      text("invalid-reason", "This check-in link does not lead to a check-in.");
    }
    show("invalid");
  }

  // --- saved recordings (IndexedDB) ------------------------------------------
  var db = {
    open: function () {
      return new Promise(function (resolve, reject) {
        var request = indexedDB.open("schizodot-checkin", 1);
        request.onupgradeneeded = function () { request.result.createObjectStore("recordings"); };
        request.onsuccess = function () { resolve(request.result); };
        request.onerror = function () { reject(request.error); };
      });
    },
    run: function (mode, action) {
      return db.open().then(function (conn) {
        return new Promise(function (resolve, reject) {
          var tx = conn.transaction("recordings", mode);
          var result = action(tx.objectStore("recordings"));
          tx.oncomplete = function () { resolve(result && result.result); };
          tx.onerror = function () { reject(tx.error); };
        });
      });
    },
    put: function (key, value) { return db.run("readwrite", function (s) { return s.put(value, key); }); },
    get: function (key) { return db.run("readonly", function (s) { return s.get(key); }); },
    remove: function (key) { return db.run("readwrite", function (s) { return s.delete(key); }); },
    prune: function () {
      var cutoff = Date.now() - KEEP_DAYS * 86400000;
      return db.run("readwrite", function (s) {
        var cursor = s.openCursor();
        cursor.onsuccess = function () {
          var c = cursor.result;
          if (!c) { return; }
          if (!c.value || c.value.savedAt < cutoff) { c.delete(); }
          c.continue();
        };
        return null;
      });
    }
  };

  function saveRecording() {
    return db.put(session.checkin_id, {
      blob: recording.blob, type: recording.type, seconds: recording.seconds,
      uploadId: recording.uploadId || null, timeline: recording.timeline || null, savedAt: Date.now()
    }).catch(function () { /* storage full or blocked: the upload still runs from memory */ });
  }

  // --- start -----------------------------------------------------------------
  function start() {
    token = readToken();
    if (!token) {
      text("invalid-reason", "This page opens from the check-in link your clinic sent you.");
      show("invalid");
      return;
    }
    api("GET", "/session").then(function (data) {
      session = data;
      if (data.state === "awaiting_recording") {
        fillIntro();
        return db.prune().catch(function () {}).then(function () {
          return db.get(data.checkin_id).catch(function () { return null; });
        }).then(function (saved) {
          if (saved && saved.blob) {
            recording = { blob: saved.blob, type: saved.type, seconds: saved.seconds, uploadId: saved.uploadId,
              timeline: saved.timeline || null };
            text("saved-info", "A check-in you recorded earlier (" + duration(saved.seconds) +
              ") is saved on this device and has not reached your clinic yet.");
            show("saved");
          } else {
            show("intro");
          }
        });
      }
      followCheckin(data);
    }, linkProblem);
  }

  function fillIntro() {
    var script = session.script;
    steps = script.prompts.map(function (p, i) {
      return { id: p.id, type: "prompt", kind: "Question " + (i + 1) + " of " + script.prompts.length,
        text: p.text, hint: p.hint };
    }).concat(script.dosing_steps.map(function (p, i) {
      return { id: p.id, type: "dosing", kind: "Medication step " + (i + 1) + " of " + script.dosing_steps.length,
        text: p.text, hint: p.hint };
    }));
    fillList("intro-prompts", script.prompts);
    fillList("intro-dosing", script.dosing_steps);
    $("intro-dosing-title").hidden = script.dosing_steps.length === 0;
  }

  function fillList(id, items) {
    var list = $(id);
    list.textContent = "";
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item.text;
      list.appendChild(li);
    });
  }

  // --- camera ----------------------------------------------------------------
  function openCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof MediaRecorder === "undefined") {
      text("camera-problem", "This browser cannot record video here. Please open the link in the latest Chrome " +
        "(Android) or Safari (iPhone).");
      show("camera-help");
      return;
    }
    var constraints = { video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 720 } }, audio: true };
    navigator.mediaDevices.getUserMedia(constraints).then(function (s) {
      stream = s;
      $("live").srcObject = stream;
      stepIndex = -1;
      text("step-count", "");
      text("prompt-text", "When you are ready, press Start recording. Questions will appear here one at a time.");
      text("prompt-hint", "");
      $("rec-start").hidden = false;
      $("next-step").hidden = true;
      $("rec-stop").hidden = true;
      show("record");
    }, function (error) {
      var name = error && error.name;
      if (name === "NotFoundError" || name === "OverconstrainedError") {
        text("camera-problem", "No camera or microphone was found on this device.");
      } else if (name === "NotReadableError") {
        text("camera-problem", "The camera or microphone is being used by another app. Close it and try again.");
      } else {
        text("camera-problem", "The browser did not allow this page to use the camera and microphone.");
      }
      show("camera-help");
    });
  }

  function stopCamera() {
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); stream = null; }
  }

  // --- recording -------------------------------------------------------------
  function pickType() {
    var candidates = ["video/webm;codecs=vp8,opus", "video/webm", "video/mp4;codecs=avc1,mp4a", "video/mp4"];
    for (var i = 0; i < candidates.length; i++) {
      if (MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported(candidates[i])) { return candidates[i]; }
    }
    return "";
  }

  function startRecording() {
    chunks = [];
    var type = pickType();
    recorder = new MediaRecorder(stream, type ? { mimeType: type, videoBitsPerSecond: 2500000 } : {});
    recorder.ondataavailable = function (e) { if (e.data && e.data.size) { chunks.push(e.data); } };
    recorder.onstop = finishRecording;
    recorder.start(1000);
    startedAt = Date.now();
    timeline = [];
    $("rec-indicator").hidden = false;
    $("rec-start").hidden = true;
    $("next-step").hidden = false;
    $("rec-stop").hidden = false;
    timerHandle = setInterval(tick, 500);
    stepIndex = 0;
    showStep();
  }

  function tick() {
    var seconds = (Date.now() - startedAt) / 1000;
    text("rec-timer", duration(seconds));
    if (seconds >= session.script.max_seconds && recorder && recorder.state === "recording") {
      recorder.stop();
    }
  }

  function showStep() {
    var step = steps[stepIndex];
    if (recorder && recorder.state === "recording") {
      timeline.push({ step_id: step.id, kind: step.type, shown_at_ms: Math.max(0, Date.now() - startedAt) });
    }
    text("step-count", step.kind);
    text("prompt-text", step.text);
    text("prompt-hint", step.hint || "");
    var last = stepIndex === steps.length - 1;
    $("next-step").hidden = last;
    $("rec-stop").className = last ? "primary" : "secondary";
  }

  function nextStep() {
    if (stepIndex < steps.length - 1) { stepIndex += 1; showStep(); }
  }

  function finishRecording() {
    clearInterval(timerHandle);
    $("rec-indicator").hidden = true;
    var seconds = (Date.now() - startedAt) / 1000;
    var type = (recorder.mimeType || chunks.length && chunks[0].type || "video/webm");
    stopCamera();
    recording = { blob: new Blob(chunks, { type: type }), type: type, seconds: seconds, uploadId: null,
      timeline: timeline.slice() };
    showReview();
  }

  function showReview() {
    var review = $("review");
    if (review.src) { URL.revokeObjectURL(review.src); }
    review.src = URL.createObjectURL(recording.blob);
    text("review-info", "Length " + duration(recording.seconds) + ", " + megabytes(recording.blob.size) + ".");
    var tooShort = recording.seconds < session.script.min_seconds;
    var tooBig = recording.blob.size > session.max_bytes;
    $("review-problem").hidden = !(tooShort || tooBig);
    text("review-problem", tooShort ? "This recording is very short. Please record again and answer the questions."
      : tooBig ? "This recording is too large to send. Please record a shorter one." : "");
    $("send").disabled = tooShort || tooBig;
    show("review");
  }

  // --- upload ----------------------------------------------------------------
  function send() {
    if (uploading) { return; }
    uploading = true;
    document.body.setAttribute("data-upload", "sending");
    show("upload");
    $("upload-problem").hidden = true;
    text("upload-status", "Keep this page open until it says received.");
    saveRecording().then(upload).then(function () {
      uploading = false;
    }, function (error) {
      uploading = false;
      uploadProblem(error);
    });
  }

  function upload() {
    var size = recording.blob.size;
    var planned = recording.uploadId
      ? api("POST", "/upload/resume", { upload_id: recording.uploadId, size: size })
      : api("POST", "/upload", uploadStart(size));
    if (recording.uploadId) { text("upload-status", "Carrying on from where it stopped..."); }
    return planned.then(function (plan) {
      recording.uploadId = plan.upload_id;
      return saveRecording().then(function () { return sendParts(plan); });
    }).then(function () {
      return api("POST", "/upload/complete", { upload_id: recording.uploadId, size: size });
    }).then(function (status) {
      setUploadProgress(size, size);
      return db.remove(session.checkin_id).catch(function () {}).then(function () {
        recording = null;
        followCheckin(status);
      });
    });
  }

  // The timeline travels with the recording (kept on the check-in before any part is sent).
  function uploadStart(size) {
    var body = { content_type: recording.type, size: size };
    if (recording.timeline && recording.timeline.length) { body.timeline = recording.timeline; }
    return body;
  }

  function partRange(number, partBytes, size) {
    var start = (number - 1) * partBytes;
    return [start, Math.min(start + partBytes, size)];
  }

  function sendParts(plan) {
    var size = recording.blob.size;
    var sent = 0;
    plan.done.forEach(function (n) { var r = partRange(n, plan.part_bytes, size); sent += r[1] - r[0]; });
    setUploadProgress(sent, size);
    var chain = Promise.resolve();
    plan.parts.forEach(function (part) {
      chain = chain.then(function () {
        var range = partRange(part.number, plan.part_bytes, size);
        // The part goes to this API with the link's token (upload mode "proxy") or to S3's presigned URL.
        var headers = plan.send_token ? { "Authorization": "Bearer " + token } : {};
        return putWithRetries(part.url, headers, recording.blob.slice(range[0], range[1]), function (loaded) {
          setUploadProgress(sent + loaded, size);
        }, 0).then(function () { sent += range[1] - range[0]; setUploadProgress(sent, size); });
      });
    });
    return chain;
  }

  // Answers that another try of the same part cannot change: the link, the check-in or the upload say no.
  var FINAL_STATUSES = [401, 404, 409, 410, 413, 422];

  function putWithRetries(url, headers, body, onProgress, attempt) {
    return put(url, headers, body, onProgress).catch(function (error) {
      if (attempt >= PART_RETRIES.length || FINAL_STATUSES.indexOf(error.status) >= 0 ||
          error.status === 403 && attempt >= 1) { throw error; }
      text("upload-status", "The connection is unsteady; trying again...");
      return wait(PART_RETRIES[attempt]).then(function () {
        return putWithRetries(url, headers, body, onProgress, attempt + 1);
      });
    });
  }

  function put(url, headers, body, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      Object.keys(headers).forEach(function (name) { xhr.setRequestHeader(name, headers[name]); });
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) { onProgress(e.loaded); } };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) { resolve(); } else { reject(new ApiError(xhr.status, "storage")); }
      };
      xhr.onerror = function () { reject(new ApiError(0, "network")); };
      xhr.ontimeout = xhr.onerror;
      xhr.send(body);
    });
  }

  function setUploadProgress(sent, size) {
    var percent = size ? Math.floor(100 * sent / size) : 0;
    $("upload-progress").value = percent;
    $("upload-progress").textContent = percent + "%";
    text("upload-percent", percent + "%");
  }

  function uploadProblem(error) {
    if (error && error.status === 409) { followCheckin({ state: "received", progress: 0 }); return; }
    if (error && error.status === 401) {
      // The link is used up once the recording is handed over: if an answer was lost on the way,
      // the check-in's state (which a used link may still read) says whether it arrived.
      api("GET", "/status").then(function (status) {
        if (status.state === "awaiting_recording") { linkProblem(error); return; }
        db.remove(session.checkin_id).catch(function () {});
        recording = null;
        followCheckin(status);
      }, function () { linkProblem(error); });
      return;
    }
    var message;
    if (error && error.status === 410) {
      recording.uploadId = null;
      saveRecording();
      message = "We could not resume sending your recording. It is still saved on this device: press " +
        "Try again to send it from the start.";
    } else if (error && error.status === 422) {
      message = "Your recording could not be sent: " + (error.detail || "it was refused") + ".";
    } else if (error && error.status === 0) {
      message = "The connection dropped. Your recording is saved on this device and sending will carry on " +
        "when you are back online, or press Try again.";
    } else {
      message = "Sending stopped because of a problem on our side. Your recording is saved on this device: " +
        "press Try again.";
    }
    text("upload-problem-text", message);
    text("upload-status", "Sending has stopped.");
    $("upload-problem").hidden = false;
    document.body.setAttribute("data-upload", error && error.status === 410 ? "cannot-resume" : "paused");
  }

  // --- after the upload ------------------------------------------------------
  var polling = null;

  function followCheckin(status) {
    if (status.state === "awaiting_recording") { return; }
    if (polling) { clearTimeout(polling); polling = null; }
    if (status.state === "done") { show("done"); return; }
    if (status.state === "not_analysed") { show("not-analysed"); return; }
    if (status.state === "closed") {
      text("invalid-reason", "This check-in is closed.");
      show("invalid");
      return;
    }
    if (document.body.getAttribute("data-screen") !== "received") { show("received"); }
    $("job-progress").value = status.progress || 0;
    text("job-status", status.state === "received" ? "Waiting to start..." :
      "Preparing for your care team: " + (status.progress || 0) + "%");
    polling = setTimeout(function () {
      api("GET", "/status").then(followCheckin, function () {
        polling = setTimeout(function () { followCheckin(status); }, STATUS_POLL_MS);
      });
    }, STATUS_POLL_MS);
  }

  // --- helpers ---------------------------------------------------------------
  function wait(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function duration(seconds) {
    var s = Math.max(0, Math.round(seconds));
    return Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
  }
  function megabytes(bytes) { return (bytes / 1048576).toFixed(1) + " MB"; }

  $("start-camera").addEventListener("click", openCamera);
  $("retry-camera").addEventListener("click", openCamera);
  $("rec-start").addEventListener("click", startRecording);
  $("next-step").addEventListener("click", nextStep);
  $("rec-stop").addEventListener("click", function () { if (recorder && recorder.state === "recording") { recorder.stop(); } });
  $("rerecord").addEventListener("click", function () { recording = null; openCamera(); });
  $("send").addEventListener("click", send);
  $("send-saved").addEventListener("click", send);
  $("discard-saved").addEventListener("click", function () {
    db.remove(session.checkin_id).catch(function () {});
    recording = null;
    show("intro");
  });
  $("upload-retry").addEventListener("click", send);
  window.addEventListener("online", function () {
    if (document.body.getAttribute("data-upload") === "paused" && !uploading && recording) { send(); }
  });
  start();
})();
