// A star link's page sends the choice itself: one click in the mail is enough. The rating it
// records is provisional for two minutes; another star opened meanwhile (a scanner) cancels it.
for (const form of document.querySelectorAll("form[data-send-itself]")) {
  form.submit();
}
