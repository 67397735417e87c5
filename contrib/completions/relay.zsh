#compdef relay

_relay_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _RELAY_COMPLETE=complete_zsh relay)
}

compdef _relay_completion relay
