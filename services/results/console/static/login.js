/* A sign-in link carries its token in the fragment (#token=...), which the browser never
 * sends to a server: take it, clear the address bar, and post it to the sign-in form. */
(function () {
  "use strict";
  var match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash || "");
  var form = document.getElementById("login-form");
  if (!match || !form) { return; }
  history.replaceState(null, "", window.location.pathname + window.location.search);
  document.getElementById("token").value = decodeURIComponent(match[1]);
  document.getElementById("login-wait").hidden = false;
  form.hidden = true;
  form.submit();
})();
