// The portal link carries its token after "#": browsers never send that part to a server, so
// it stays out of access logs and Referer headers. Move it into the form (posted, not logged),
// drop it from the address bar and history, and hide the field that asks to paste it.
"use strict";
(() => {
  const form = document.getElementById("portal-open");
  const token = window.location.hash.slice(1);
  if (!form || !token) return;
  form.elements.token.value = token;
  history.replaceState(null, "", window.location.pathname);
  form.querySelector("[data-paste-token]").hidden = true;
})();
