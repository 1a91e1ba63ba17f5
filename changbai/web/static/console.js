// Small progressive enhancements; every page works without script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A pasted health-card QR text: trim the whitespace and line breaks scanners add.
  var qr = document.getElementById("qr");
  if (qr) { qr.addEventListener("change", function () { qr.value = qr.value.trim(); }); }
});
