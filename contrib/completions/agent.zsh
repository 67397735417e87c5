#compdef agent

_agent_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _AGENT_COMPLETE=complete_zsh agent)
}

compdef _agent_completion agent
